package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// TestServeExposesHTTPPoolAndRequestMetrics drives calls through a real
// `switchboard serve` and reads /metrics: HTTP calls by route, method and
// code (an unknown path as "unmatched"), their latency, the event streams
// open, the database pool, the open requests and the reply latency of both
// reply paths (AMQP and POST /v1/replies).
func TestServeExposesHTTPPoolAndRequestMetrics(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	silentQueue(t, amqpURL, names)
	gw := start(t, append(env(dbURL, amqpURL, names), "SWITCHBOARD_DB_MAX_CONNS=7"), "serve")
	start(t, []string{"SWITCHBOARD_AMQP_URL=" + amqpURL, "SWITCHBOARD_REQUEST_EXCHANGE=" + names.Exchange,
		"SWITCHBOARD_ECHO_QUEUE=" + names.Queue("echo"), "SWITCHBOARD_LOG_FORMAT=json"}, "echo", "workflow.#")
	base := "http://" + gw.addr
	jsonCT := map[string]string{"Content-Type": "application/json"}

	res, rec := httpDo(t, "POST", base+"/workflow/create", jsonCT, `{"n": 1}`)
	require.Equal(t, 202, res.StatusCode)
	echoed := rec["id"].(string)
	res, rec = httpDo(t, "GET", base+"/v1/requests/"+echoed+"?wait=20", nil, "")
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "replied", rec["status"])
	res, rec = httpDo(t, "POST", base+"/silent/job", jsonCT, `{}`)
	require.Equal(t, 202, res.StatusCode)
	silent := rec["id"].(string)
	res, _ = httpDo(t, "GET", base+"/v1/no-such-thing-7f3a", nil, "")
	require.Equal(t, 404, res.StatusCode)

	// An event stream of the silent request stays open until its reply.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/v1/requests/"+silent+"/events", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	stream, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer stream.Body.Close()
	require.Equal(t, 200, stream.StatusCode)

	mfs := scrape(t, base)
	require.Equal(t, 1.0, value(t, mfs, "switchboard_event_streams", nil))
	require.Equal(t, 2.0, value(t, mfs, "switchboard_http_requests_total", map[string]string{"route": "/*", "method": "POST", "code": "202"}))
	require.Equal(t, 1.0, value(t, mfs, "switchboard_http_requests_total", map[string]string{"route": "/v1/requests/{id}", "method": "GET", "code": "200"}))
	require.Equal(t, 1.0, value(t, mfs, "switchboard_http_requests_total", map[string]string{"route": "unmatched", "method": "GET", "code": "404"}))
	require.EqualValues(t, 1, histogramCount(t, mfs, "switchboard_http_request_duration_seconds", map[string]string{"route": "/v1/requests/{id}", "method": "GET"}))
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				for _, raw := range []string{"7f3a", echoed, silent} {
					require.NotContains(t, l.GetValue(), raw, "%s has a raw path in its label %s", mf.GetName(), l.GetName())
				}
			}
		}
	}

	require.Equal(t, 7.0, value(t, mfs, "switchboard_db_pool_max_connections", nil))
	for _, state := range []string{"acquired", "idle", "constructing"} {
		require.Contains(t, labelValues(mfs, "switchboard_db_pool_connections", "state"), state)
	}
	require.Positive(t, value(t, mfs, "switchboard_db_pool_acquires_total", nil))
	require.Positive(t, value(t, mfs, "switchboard_db_pool_acquire_wait_seconds_total", nil))
	// The echoed request is closed; the silent one waits for its reply.
	require.Equal(t, 1.0, value(t, mfs, "switchboard_open_requests", map[string]string{"status": "pending"}))
	require.Equal(t, 0.0, value(t, mfs, "switchboard_open_requests", map[string]string{"status": "queued"}))
	require.EqualValues(t, 1, histogramCount(t, mfs, "switchboard_reply_latency_seconds", nil), "the echo's reply (AMQP)")

	// The HTTP reply path: the stream gets its final event and closes.
	res, rec = httpDo(t, "POST", base+"/v1/replies", map[string]string{"Content-Type": "application/json", "Correlation-ID": silent}, `{"ok": true}`)
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "stored", rec["outcome"])
	require.Eventually(t, func() bool {
		mfs = scrape(t, base)
		return value(t, mfs, "switchboard_event_streams", nil) == 0
	}, 10*time.Second, 50*time.Millisecond, "the stream ended with the reply")
	require.EqualValues(t, 2, histogramCount(t, mfs, "switchboard_reply_latency_seconds", nil), "and the reply over HTTP")
	require.Positive(t, value(t, mfs, "switchboard_http_requests_total", map[string]string{"route": "/metrics", "method": "GET", "code": "200"}))
	require.Equal(t, 1.0, value(t, mfs, "switchboard_http_requests_total", map[string]string{"route": "/v1/replies", "method": "POST", "code": "200"}))
	require.Eventually(t, func() bool {
		return value(t, scrape(t, base), "switchboard_open_requests", map[string]string{"status": "pending"}) == 0
	}, 15*time.Second, 250*time.Millisecond, "the open count follows, within its 5s cache")

	var ours []*dto.MetricFamily
	for name, mf := range mfs {
		if strings.HasPrefix(name, "switchboard_http_request") || strings.HasPrefix(name, "switchboard_db_pool_") ||
			name == "switchboard_open_requests" || name == "switchboard_reply_latency_seconds" || name == "switchboard_event_streams" {
			ours = append(ours, mf)
		}
	}
	require.Len(t, ours, 12)
	problems, err := promlint.NewWithMetricFamilies(ours).Lint()
	require.NoError(t, err)
	require.Empty(t, problems, "Prometheus naming conventions")
	gw.stop(t)
}

// dashboardFile is the example Grafana dashboard.
const dashboardFile = "../../deploy/grafana/switchboard-dashboard.json"

// TestDashboardQueriesRegisteredMetrics keeps the example Grafana dashboard
// honest: every metric its queries name is one a running gateway exposes.
// The gateway runs with webhooks and rules on, and is driven until every
// family the dashboard reads has a series: a webhook delivered, a dead
// letter, and a broker outage that leaves a request for the outbox relay.
func TestDashboardQueriesRegisteredMetrics(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	type variable struct {
		Name, Type string
		Query      any
	}
	var dash struct {
		SchemaVersion int `json:"schemaVersion"`
		Templating    struct {
			List []variable
		}
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.GreaterOrEqual(t, dash.SchemaVersion, 36, "Grafana 10's schema")
	require.True(t, slices.ContainsFunc(dash.Templating.List, func(v variable) bool {
		return v.Type == "datasource" && v.Query == "prometheus"
	}), "a Prometheus data source variable")
	require.NotContains(t, string(raw), `"uid": "prometheus"`, "panels use the data source variable")

	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || (k == "query" && strings.Contains(s, "switchboard_"))) {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var whole any
	require.NoError(t, json.Unmarshal(raw, &whole))
	walk(whole)
	require.NotEmpty(t, exprs)
	used := map[string]bool{}
	metricName := regexp.MustCompile(`\bswitchboard_[a-z0-9_]+`)
	for _, e := range exprs {
		names := metricName.FindAllString(e, -1)
		require.NotEmpty(t, names, "query %q names no switchboard metric", e)
		for _, n := range names {
			used[n] = true
		}
	}

	mfs := scrapeAfterEverything(t)
	var missing []string
	for n := range used {
		if _, ok := mfs[n]; ok {
			continue
		}
		base := n
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if mf, ok := mfs[base]; ok && base != n && mf.GetType() == dto.MetricType_HISTOGRAM {
			continue
		}
		missing = append(missing, n)
	}
	slices.Sort(missing)
	require.Empty(t, missing, "the dashboard queries metrics the gateway does not expose")
}

// scrapeAfterEverything runs a gateway with webhooks and rules on, drives
// it through the paths that create a series in every labelled family the
// dashboard reads, and returns its metrics.
func scrapeAfterEverything(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	proxy := testsvc.NewProxy(t, testsvc.HostOf(t, amqpURL))
	hooks := make(chan struct{}, 4)
	rcv := newReceiver(t, hooks)
	gw := start(t, append(env(dbURL, testsvc.WithHost(t, amqpURL, proxy.Addr()), names),
		"SWITCHBOARD_WEBHOOK_SECRETS=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "SWITCHBOARD_WEBHOOK_ALLOW=127.0.0.1",
		"SWITCHBOARD_RULES_DIR="+pingRules(t, names.EventsExchange)), "serve")
	start(t, []string{"SWITCHBOARD_AMQP_URL=" + amqpURL, "SWITCHBOARD_REQUEST_EXCHANGE=" + names.Exchange,
		"SWITCHBOARD_ECHO_QUEUE=" + names.Queue("echo"), "SWITCHBOARD_LOG_FORMAT=json"}, "echo", "workflow.#")
	base := "http://" + gw.addr

	// A reply to a webhook, and a reply nobody asked for (a dead letter).
	res, _ := httpDo(t, "POST", base+"/workflow/create", map[string]string{"Content-Type": "application/json", "Reply-To": rcv + "/hook"}, `{}`)
	require.Equal(t, 202, res.StatusCode)
	select {
	case <-hooks:
	case <-time.After(20 * time.Second):
		t.Fatalf("no webhook delivered:\n%s", gw.log())
	}
	res, _ = httpDo(t, "POST", base+"/v1/replies", map[string]string{"Content-Type": "application/json",
		"Correlation-ID": "0b0e5b9e-7f3a-4d4e-9a59-4f8c6a0c2f11"}, `{}`)
	require.Equal(t, 404, res.StatusCode)
	res, _ = httpDo(t, "POST", base+"/v1/hooks/ping", map[string]string{"Content-Type": "application/json", "Event-Type": "ping"}, `{}`)
	require.Equal(t, 202, res.StatusCode)

	// The broker away: a submit is kept in the outbox, and published by
	// the relay once the gateway has reconnected.
	proxy.Cut()
	require.Eventually(t, func() bool {
		res, _ := httpDo(t, "GET", base+"/readyz", nil, "")
		return res.StatusCode == 503
	}, 10*time.Second, 50*time.Millisecond, "the gateway never noticed the broker was gone")
	res, rec := httpDo(t, "POST", base+"/workflow/later", map[string]string{"Content-Type": "application/json"}, `{}`)
	require.Equal(t, 202, res.StatusCode)
	require.Equal(t, "queued", rec["status"])
	proxy.Restore()
	res, rec = httpDo(t, "GET", base+"/v1/requests/"+rec["id"].(string)+"?wait=30", nil, "")
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "replied", rec["status"], "relayed after the outage, and answered")

	mfs := scrape(t, base)
	require.Positive(t, value(t, mfs, "switchboard_outbox_publishes_total", map[string]string{"result": "confirmed"}))
	return mfs
}

// newReceiver is a webhook receiver on loopback that signals each call.
func newReceiver(t *testing.T, got chan<- struct{}) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		select {
		case got <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// silentQueue binds a queue that takes requests for silent.# and never
// answers them.
func silentQueue(t *testing.T, amqpURL string, names testsvc.Names) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(names.Exchange, "topic", true, false, false, false, nil))
	q := names.Queue("silent")
	_, err = ch.QueueDeclare(q, true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(q, "silent.#", names.Exchange, false, nil))
}

// scrape reads base's /metrics.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(res.Body)
	require.NoError(t, err)
	return mfs
}

// series is the series of family name with exactly labels, or nil.
func series(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	for _, m := range mfs[name].GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				match = false
			}
		}
		if match {
			return m
		}
	}
	return nil
}

// value is a counter's or gauge's value; the series must exist.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m := series(mfs, name, labels)
	require.NotNil(t, m, "no series %s%v", name, labels)
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// histogramCount is a histogram's sample count; the series must exist.
func histogramCount(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) uint64 {
	t.Helper()
	m := series(mfs, name, labels)
	require.NotNil(t, m, "no series %s%v", name, labels)
	return m.GetHistogram().GetSampleCount()
}

// labelValues lists the values label takes in family name.
func labelValues(mfs map[string]*dto.MetricFamily, name, label string) []string {
	var out []string
	for _, m := range mfs[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				out = append(out, l.GetValue())
			}
		}
	}
	return out
}

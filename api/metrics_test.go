package api_test

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/api"
	"github.com/switchboard-gw/switchboard/auth"
	"github.com/switchboard-gw/switchboard/gateway"
)

// TestHTTPMetricsLabelRoutesNotPaths checks the labels of the HTTP metrics
// on a router without a database or broker behind it: each call is counted
// under its route pattern, an unknown path or method under "unmatched"
// (never the path itself), and an unknown method as "other".
func TestHTTPMetricsLabelRoutesNotPaths(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	srv, err := api.New(api.DefaultConfig(), nil, nil, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		gateway.NewID, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	srv.SetMetrics(api.NewMetrics(reg))
	srv.SetCORS([]string{"https://app.example.com"})
	h := srv.Handler()

	for _, tc := range []struct {
		method, path       string
		route, label, code string
	}{
		{"GET", "/healthz", "/healthz", "GET", "200"},
		// The route matched; its handler answered 404 (ids are UUIDs).
		{"GET", "/v1/requests/not-a-uuid", "/v1/requests/{id}", "GET", "404"},
		// Unknown paths: a subrouter's 404, and a GET where only POST
		// (submit) is routed.
		{"GET", "/v1/no-such-thing-7f3a", "unmatched", "GET", "404"},
		{"GET", "/no/such/path-7f3a", "unmatched", "GET", "405"},
		{"BREW", "/healthz", "unmatched", "other", "405"},
		// A CORS preflight, answered by the CORS middleware.
		{"OPTIONS", "/v1/requests/0b0e5b9e-7f3a-4d4e-9a59-4f8c6a0c2f11", "/v1/requests/{id}", "OPTIONS", "204"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.method == "OPTIONS" {
				r.Header.Set("Origin", "https://app.example.com")
				r.Header.Set("Access-Control-Request-Method", "GET")
			}
			h.ServeHTTP(w, r)
			require.Equal(t, tc.code, strconv.Itoa(w.Code))
			require.Equal(t, 1.0, counterValue(t, reg, "switchboard_http_requests_total",
				map[string]string{"route": tc.route, "method": tc.label, "code": tc.code}))
		})
	}

	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				require.NotContains(t, l.GetValue(), "7f3a", "%s has a raw path in label %s", mf.GetName(), l.GetName())
			}
		}
		if mf.GetName() == "switchboard_http_request_duration_seconds" {
			var n uint64
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
			require.EqualValues(t, 6, n, "every call is timed")
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	require.NoError(t, err)
	require.Empty(t, problems, "the HTTP metrics follow Prometheus's naming conventions")
}

// TestHTTPMetricsCountCallsAnsweredBeforeRouting checks that a call a
// middleware refuses before the router runs (here: no API key) is still
// counted under the route it asked for, not as "unmatched".
func TestHTTPMetricsCountCallsAnsweredBeforeRouting(t *testing.T) {
	t.Parallel()
	b := setup(t, options{auth: &auth.Limits{}})
	id := gateway.NewID().String()
	res, err := b.http.Get(b.url + "/v1/requests/" + id)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 401, res.StatusCode)

	res, err = b.http.Get(b.url + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(res.Body)
	require.NoError(t, err)
	var found bool
	for _, m := range mfs["switchboard_http_requests_total"].GetMetric() {
		require.False(t, labelsEqual(m.GetLabel(), map[string]string{"route": "unmatched", "method": "GET", "code": "401"}))
		if labelsEqual(m.GetLabel(), map[string]string{"route": "/v1/requests/{id}", "method": "GET", "code": "401"}) {
			found = true
			require.Equal(t, 1.0, m.GetCounter().GetValue())
		}
	}
	require.True(t, found, "the refused call is counted under its route")
}

// counterValue is the value of the counter name with exactly labels in
// reg, or 0 when there is none.
func counterValue(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsEqual(m.GetLabel(), labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelsEqual(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, l := range got {
		if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
			return false
		}
	}
	return true
}

// A handler that panics is answered 500 problem+json, and the call is
// counted and logged as the 500 it was, with the panic.
func TestHandlerPanicIsCountedAndLoggedAs500(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// No records behind the server: reading one panics.
	srv, err := api.New(api.DefaultConfig(), nil, nil, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), gateway.NewID, logger)
	require.NoError(t, err)
	srv.SetMetrics(api.NewMetrics(reg))
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/v1/requests/0b0e5b9e-7f3a-4d4e-9a59-4f8c6a0c2f11", nil))

	require.Equal(t, 500, w.Code)
	require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
	require.Equal(t, 1.0, counterValue(t, reg, "switchboard_http_requests_total",
		map[string]string{"route": "/v1/requests/{id}", "method": "GET", "code": "500"}))
	require.Contains(t, logs.String(), `"msg":"handler panic"`)
	require.Contains(t, logs.String(), `"msg":"http","method":"GET","path":"/v1/requests/0b0e5b9e-7f3a-4d4e-9a59-4f8c6a0c2f11","status":500`)
}

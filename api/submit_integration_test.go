package api_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"github.com/switchboard-gw/switchboard/api"
)

const seedBody = `{"Workflow": "46371a70b2cf3953b12b3e0bf8a83ea2", "Modules": [{"GridCapability": ["23c83140-05df-4b53-9ccf-ce1fcfc22773"]}]}`

func TestSubmitThenLongPollGetsEchoReply(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.echo(t, "echo", "workflow.#")

	before := time.Now().UnixMilli()
	res := b.do(t, "POST", "/workflow/create", jsonCT, seedBody)
	require.Equal(t, 202, res.status, "body: %s", res.body)

	id := res.header.Get("Message-ID")
	parsed, err := uuid.Parse(id)
	require.NoError(t, err)
	require.Equal(t, uuid.Version(7), parsed.Version(), "the gateway makes v7 ids")
	require.Equal(t, "/v1/requests/"+id, res.header.Get("Location"))
	stamp, err := strconv.ParseInt(res.header.Get("Time"), 10, 64)
	require.NoError(t, err)
	require.InDelta(t, before, stamp, 5000)

	rec := res.json(t)
	require.Equal(t, id, rec["id"])
	require.Equal(t, "workflow.create", rec["routing_key"])
	require.Contains(t, []any{"pending", "replied"}, rec["status"])
	require.EqualValues(t, stamp, rec["time"])
	require.InDelta(t, stamp+60_000, rec["expires_at"], 2000, "default Request-Timeout is 60s")
	require.Nil(t, rec["reply_to"])
	require.Equal(t, "46371a70b2cf3953b12b3e0bf8a83ea2", rec["request"].(map[string]any)["Workflow"])

	got := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "")
	require.Equal(t, 200, got.status)
	rec = got.json(t)
	require.Equal(t, "replied", rec["status"])
	reply := rec["reply"].(map[string]any)
	require.Equal(t, id, reply["correlation_id"])
	require.NotEmpty(t, reply["message_id"])
	require.Greater(t, reply["time"].(float64), float64(0))
	body := reply["body"].(map[string]any)
	require.Equal(t, "Everything is awesome", body["result"])
	require.Equal(t, "46371a70b2cf3953b12b3e0bf8a83ea2", body["request"].(map[string]any)["Workflow"])

	// The reply itself, with its own headers.
	r := b.do(t, "GET", "/v1/requests/"+id+"/reply", nil, "")
	require.Equal(t, 200, r.status)
	require.Equal(t, id, r.header.Get("Correlation-ID"))
	require.Equal(t, reply["message_id"], r.header.Get("Message-ID"))
	require.Equal(t, strconv.FormatInt(int64(reply["time"].(float64)), 10), r.header.Get("Time"))
	require.Equal(t, "replied", r.header.Get("Request-Status"))
	require.Equal(t, "Everything is awesome", r.json(t)["result"])
}

func TestPublishedMessageCarriesContractProperties(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	ch, q := b.bindQueue(t, "raw", "orion.#")

	id := uuid.NewString()
	res := b.do(t, "POST", "/orion/workflow/create", with(jsonCT,
		"Message-ID", id, "Time", "1552959300136", "Request-Timeout", "30"), `{"x": 1}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	require.Equal(t, id, res.header.Get("Message-ID"))
	require.Equal(t, "1552959300136", res.header.Get("Time"))
	require.Equal(t, "pending", res.json(t)["status"], "a confirmed publish is pending")

	d := getOne(t, ch, q)
	require.Equal(t, "orion.workflow.create", d.RoutingKey)
	require.Equal(t, id, d.MessageId)
	require.Equal(t, "application/json", d.ContentType)
	require.Equal(t, amqp.Persistent, d.DeliveryMode)
	require.Equal(t, b.names.ReplyQueue, d.ReplyTo)
	require.Equal(t, "orion.workflow.create", d.Type)
	require.Equal(t, "switchboard", d.AppId)
	require.EqualValues(t, int64(1552959300136), d.Headers["time"])
	require.Equal(t, int64(1552959300), d.Timestamp.Unix())
	exp, err := strconv.Atoi(d.Expiration)
	require.NoError(t, err)
	require.InDelta(t, 30_000, exp, 2000)
	require.JSONEq(t, `{"x": 1}`, string(d.Body))
	require.Empty(t, d.CorrelationId)
}

func TestUnroutableAnswers503AndKeepsRecord(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})

	start := time.Now()
	res := b.do(t, "POST", "/nobody/listens", jsonCT, `{}`)
	require.Less(t, time.Since(start), time.Second, "unroutable must be answered within a second")
	requireProblem(t, res, 503, "unroutable")
	id := res.header.Get("Message-ID")
	require.Equal(t, "/v1/requests/"+id, res.header.Get("Location"))

	rec := b.do(t, "GET", "/v1/requests/"+id, nil, "")
	require.Equal(t, 200, rec.status)
	require.Equal(t, "unroutable", rec.json(t)["status"])

	gone := b.do(t, "GET", "/v1/requests/"+id+"/reply", nil, "")
	requireProblem(t, gone, 410, "unroutable")

	// Repeating the same request answers as the original did, and publishes nothing.
	again := b.do(t, "POST", "/nobody/listens", with(jsonCT, "Message-ID", id), `{}`)
	requireProblem(t, again, 503, "unroutable")
}

func TestIdempotentRepeatPublishesOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	ch, q := b.bindQueue(t, "raw", "jobs.run")

	id := uuid.NewString()
	h := with(jsonCT, "Message-ID", id)
	first := b.do(t, "POST", "/jobs/run", h, `{"n": 1}`)
	require.Equal(t, 202, first.status)
	second := b.do(t, "POST", "/jobs/run", h, `{"n": 1}`)
	require.Equal(t, 202, second.status)
	require.Equal(t, id, second.header.Get("Message-ID"))
	require.Equal(t, first.header.Get("Time"), second.header.Get("Time"), "answers as for the original")
	require.Equal(t, first.json(t)["expires_at"], second.json(t)["expires_at"])

	getOne(t, ch, q)
	time.Sleep(300 * time.Millisecond) // a second publish would be routed by now
	_, ok, err := ch.Get(q, true)
	require.NoError(t, err)
	require.False(t, ok, "a repeat must not publish again")

	conflict := b.do(t, "POST", "/jobs/run", h, `{"n": 2}`)
	requireProblem(t, conflict, 409, "message-id-conflict")
	otherKey := b.do(t, "POST", "/jobs/other", h, `{"n": 1}`)
	requireProblem(t, otherKey, 409, "message-id-conflict")
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM requests`))
}

func TestBadInputGetsProblemAndWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, options{apiCfg: func(c *api.Config) { c.MaxBodyBytes = 64 }})
	b.bindQueue(t, "sink", "#")

	cases := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		body    string
		status  int
		kind    string
	}{
		{"no content type", "POST", "/workflow/create", nil, `{}`, 415, "unsupported-media-type"},
		{"text/plain", "POST", "/workflow/create", map[string]string{"Content-Type": "text/plain"}, `{}`, 415, "unsupported-media-type"},
		{"latin1 charset", "POST", "/workflow/create", map[string]string{"Content-Type": "application/json; charset=latin1"}, `{}`, 415, "unsupported-media-type"},
		{"not json", "POST", "/workflow/create", jsonCT, `{"a":`, 400, "invalid-json"},
		{"empty body", "POST", "/workflow/create", jsonCT, ``, 400, "invalid-json"},
		{"too large", "POST", "/workflow/create", jsonCT, `{"a":"` + strings.Repeat("x", 100) + `"}`, 413, "body-too-large"},
		{"bad message id", "POST", "/workflow/create", with(jsonCT, "Message-ID", "not-a-uuid"), `{}`, 400, "invalid-header"},
		{"bad time", "POST", "/workflow/create", with(jsonCT, "Time", "yesterday"), `{}`, 400, "invalid-header"},
		{"negative time", "POST", "/workflow/create", with(jsonCT, "Time", "-5"), `{}`, 400, "invalid-header"},
		{"bad timeout", "POST", "/workflow/create", with(jsonCT, "Request-Timeout", "soon"), `{}`, 400, "invalid-header"},
		{"zero timeout", "POST", "/workflow/create", with(jsonCT, "Request-Timeout", "0"), `{}`, 400, "invalid-header"},
		{"timeout over max", "POST", "/workflow/create", with(jsonCT, "Request-Timeout", "999999999"), `{}`, 400, "invalid-header"},
		{"relative reply-to", "POST", "/workflow/create", with(jsonCT, "Reply-To", "/hook"), `{}`, 400, "invalid-header"},
		{"ftp reply-to", "POST", "/workflow/create", with(jsonCT, "Reply-To", "ftp://example.invalid/x"), `{}`, 400, "invalid-header"},
		{"encoded slash", "POST", "/a%2Fb", jsonCT, `{}`, 400, "invalid-path"},
		{"dot in segment", "POST", "/workflow.create", jsonCT, `{}`, 400, "invalid-path"},
		{"empty segment", "POST", "/workflow//create", jsonCT, `{}`, 400, "invalid-path"},
		{"nine segments", "POST", "/a/b/c/d/e/f/g/h/i", jsonCT, `{}`, 400, "invalid-path"},
		{"long segment", "POST", "/" + strings.Repeat("a", 65), jsonCT, `{}`, 400, "invalid-path"},
		{"reserved v1", "POST", "/v1/nothing", jsonCT, `{}`, 404, "not-found"},
		{"reserved ui", "POST", "/ui/x", jsonCT, `{}`, 404, "not-found"},
		{"reserved healthz", "POST", "/healthz", jsonCT, `{}`, 405, "method-not-allowed"},
		{"unknown id", "GET", "/v1/requests/" + uuid.NewString(), nil, "", 404, "not-found"},
		{"malformed id", "GET", "/v1/requests/123", nil, "", 404, "not-found"},
		{"unknown id reply", "GET", "/v1/requests/" + uuid.NewString() + "/reply", nil, "", 404, "not-found"},
		{"bad wait", "GET", "/v1/requests/" + uuid.NewString() + "?wait=forever", nil, "", 400, "invalid-parameter"},
		{"unknown v1 path", "GET", "/v1/nope", nil, "", 404, "not-found"},
		{"put on a request path", "PUT", "/workflow/create", jsonCT, `{}`, 405, "method-not-allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := b.do(t, c.method, c.path, c.headers, c.body)
			requireProblem(t, res, c.status, c.kind)
		})
	}
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM requests`), "nothing half-written")
}

func TestPreferWait(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.echo(t, "echo", "fast.#")
	b.bindQueue(t, "silent", "slow.#") // routable, never answered

	res := b.do(t, "POST", "/fast/job", with(jsonCT, "Prefer", "respond-async, wait=10"), `{"k": "v"}`)
	require.Equal(t, 200, res.status, "body: %s", res.body)
	require.Equal(t, "wait=10", res.header.Get("Preference-Applied"))
	rec := res.json(t)
	require.Equal(t, "replied", rec["status"])
	require.Equal(t, "Everything is awesome", rec["reply"].(map[string]any)["body"].(map[string]any)["result"])
	require.NotEmpty(t, res.header.Get("Location"))

	start := time.Now()
	slow := b.do(t, "POST", "/slow/job", with(jsonCT, "Prefer", "wait=1"), `{}`)
	require.Equal(t, 202, slow.status)
	require.GreaterOrEqual(t, time.Since(start), time.Second)
	require.Equal(t, "pending", slow.json(t)["status"])

	// Capped by the configured maximum (15s in these tests).
	capped := b.do(t, "POST", "/fast/job", with(jsonCT, "Prefer", "wait=3600"), `{}`)
	require.Equal(t, 200, capped.status)
	require.Equal(t, "wait=15", capped.header.Get("Preference-Applied"))
}

func TestReplyEndpointWhilePendingAndAfterFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.bindQueue(t, "silent", "calibrate.#")

	res := b.do(t, "POST", "/calibrate/run", jsonCT, `{}`)
	require.Equal(t, 202, res.status)
	id := res.header.Get("Message-ID")

	pending := b.do(t, "GET", "/v1/requests/"+id+"/reply", nil, "")
	require.Equal(t, 202, pending.status)
	require.NotEmpty(t, pending.header.Get("Retry-After"))
	require.Equal(t, "pending", pending.json(t)["status"])

	// A waiting GET on the reply is answered as soon as the reply is stored.
	done := make(chan response, 1)
	go func() { done <- b.do(t, "GET", "/v1/requests/"+id+"/reply?wait=10", nil, "") }()
	time.Sleep(200 * time.Millisecond)
	b.reply(t, id, `{"error": "calibration diverged"}`, amqp.Table{"status": "error"})
	got := <-done
	require.Equal(t, 200, got.status)
	require.Equal(t, "failed", got.header.Get("Request-Status"))
	require.Equal(t, "calibration diverged", got.json(t)["error"])

	rec := b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)
	require.Equal(t, "failed", rec["status"])
}

func TestClientLeavingALongPollCostsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.bindQueue(t, "silent", "wait.#")
	id := b.do(t, "POST", "/wait/here", jsonCT, `{}`).header.Get("Message-ID")

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		req, _ := newRequest(ctx, b.url+"/v1/requests/"+id+"?wait=10")
		_, err := b.http.Do(req)
		errc <- err
	}()
	require.Eventually(t, func() bool { return b.store.Waiters() == 1 }, 5*time.Second, 10*time.Millisecond)
	cancel()
	require.Error(t, <-errc)
	require.Eventually(t, func() bool { return b.store.Waiters() == 0 }, 5*time.Second, 10*time.Millisecond,
		"the waiter must be released when the client leaves")

	// The reply is still stored and served.
	b.reply(t, id, `{"ok": true}`, nil)
	rec := b.do(t, "GET", "/v1/requests/"+id+"?wait=5", nil, "").json(t)
	require.Equal(t, "replied", rec["status"])
}

func TestRequestTimeoutExpiresAndWakesWaiters(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	ch, q := b.bindQueue(t, "silent", "expire.#")

	res := b.do(t, "POST", "/expire/me", with(jsonCT, "Request-Timeout", "1"), `{}`)
	require.Equal(t, 202, res.status)
	id := res.header.Get("Message-ID")
	d := getOne(t, ch, q)
	exp, _ := strconv.Atoi(d.Expiration)
	require.LessOrEqual(t, exp, 1000)

	start := time.Now()
	got := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "")
	require.Less(t, time.Since(start), 5*time.Second, "the sweeper must wake the long-poll")
	require.Equal(t, "expired", got.json(t)["status"])
	requireProblem(t, b.do(t, "GET", "/v1/requests/"+id+"/reply", nil, ""), 410, "expired")

	// A reply after expiry is kept as a dead letter, never dropped.
	b.reply(t, id, `{"too": "late"}`, nil)
	require.Eventually(t, func() bool {
		return b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND reason = 'late'`, id) == 1
	}, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, "expired", b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["status"])
}

func TestReplyToIsStored(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.bindQueue(t, "silent", "hook.#")
	res := b.do(t, "POST", "/hook/me", with(jsonCT, "Reply-To", "https://example.invalid/hooks/1"), `{}`)
	require.Equal(t, 202, res.status)
	require.Equal(t, "https://example.invalid/hooks/1", res.json(t)["reply_to"])
}

// A body nested deeper than the limit (64) is refused before anything
// parses it; one at the limit is taken.
func TestDeeplyNestedBodyIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.bindQueue(t, "deep", "deep.#")
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	res := b.do(t, "POST", "/deep/body", jsonCT, deep(65))
	requireProblem(t, res, 400, "invalid-json")
	require.Contains(t, res.json(t)["detail"], "65 levels")
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM requests`))
	require.Equal(t, 202, b.do(t, "POST", "/deep/body", jsonCT, deep(64)).status)
}

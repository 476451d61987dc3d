package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/responder"
)

// open submits a request nobody answers and returns its id.
func (b *bundle) open(t *testing.T, headers map[string]string) string {
	t.Helper()
	b.bindQueue(t, "silent", "open.#")
	res := b.do(t, "POST", "/open/request", with(jsonCT, flatten(headers)...), `{}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	return res.header.Get("Message-ID")
}

func flatten(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k, v)
	}
	return out
}

func TestAMQPReplyFirstWinsDuplicatesIgnored(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	id := b.open(t, nil)

	b.reply(t, id, `{"n": 1}`, amqp.Table{"time": int64(1553020348447)})
	rec := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "").json(t)
	require.Equal(t, "replied", rec["status"])
	reply := rec["reply"].(map[string]any)
	require.EqualValues(t, 1553020348447, reply["time"])

	b.reply(t, id, `{"n": 2}`, nil)
	// The duplicate is acked (the queue drains) and changes nothing.
	require.Eventually(t, func() bool { return b.queueDepth(t, b.names.ReplyQueue) == 0 }, 5*time.Second, 20*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	rec = b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)
	require.EqualValues(t, 1, rec["reply"].(map[string]any)["body"].(map[string]any)["n"])
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM dead_letters`), "a duplicate is not a dead letter")
}

func TestAMQPReplyUnknownCorrelationIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	unknown := uuid.NewString()
	b.reply(t, unknown, `{"orphan": true}`, nil)
	b.reply(t, "not-even-a-uuid", `{"orphan": true}`, nil)
	require.Eventually(t, func() bool {
		return b.count(t, `SELECT count(*) FROM dead_letters WHERE reason = 'unknown' AND source = 'amqp'`) == 2
	}, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND body = '{"orphan": true}'::bytea`, unknown))
	require.Equal(t, 0, b.queueDepth(t, b.names.ReplyQueue), "dead letters are acked once kept")

	metrics := b.do(t, "GET", "/metrics", nil, "")
	require.Equal(t, 200, metrics.status)
	require.Contains(t, string(metrics.body), `switchboard_dead_letters_total{reason="unknown"} 2`)
}

func TestAMQPReplyThatIsNotJSONFailsTheRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	id := b.open(t, nil)
	b.reply(t, id, `plain text, not json`, nil)
	rec := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "").json(t)
	require.Equal(t, "failed", rec["status"])
	body := rec["reply"].(map[string]any)["body"].(map[string]any)
	require.Equal(t, "invalid_reply", body["error"])
	require.Equal(t, "plain text, not json", body["raw"])
}

func TestHTTPReplies(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	id := b.open(t, nil)

	requireProblem(t, b.do(t, "POST", "/v1/replies", jsonCT, `{}`), 400, "invalid-header")
	requireProblem(t, b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", id), `nope`), 400, "invalid-json")
	requireProblem(t, b.do(t, "POST", "/v1/replies", map[string]string{"Correlation-ID": id}, `{}`), 415, "unsupported-media-type")
	requireProblem(t, b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", id, "Reply-Status", "maybe"), `{}`), 400, "invalid-header")
	require.Equal(t, "pending", b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["status"], "rejected replies change nothing")

	msgID := uuid.NewString()
	res := b.do(t, "POST", "/v1/replies", with(jsonCT, "Correl-ID", id, "Message-ID", msgID, "Time", "1553020348447"), `{"result": "over http"}`)
	require.Equal(t, 200, res.status, "body: %s", res.body)
	require.Equal(t, "stored", res.json(t)["outcome"])

	rec := b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)
	require.Equal(t, "replied", rec["status"])
	reply := rec["reply"].(map[string]any)
	require.Equal(t, msgID, reply["message_id"])
	require.Equal(t, id, reply["correlation_id"])
	require.EqualValues(t, 1553020348447, reply["time"])

	dup := b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", id), `{"result": "again"}`)
	require.Equal(t, 200, dup.status)
	require.Equal(t, "duplicate", dup.json(t)["outcome"])

	unknown := uuid.NewString()
	requireProblem(t, b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", unknown), `{"x": 1}`), 404, "unknown-correlation")
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND source = 'http'`, unknown))

	// Status error over HTTP.
	id2 := b.open(t, nil)
	res = b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", id2, "Reply-Status", "error"), `{"error": "boom"}`)
	require.Equal(t, 200, res.status)
	require.Equal(t, "failed", b.do(t, "GET", "/v1/requests/"+id2, nil, "").json(t)["status"])
}

func TestHTTPReplyAfterExpiryIsGoneAndKept(t *testing.T) {
	t.Parallel()
	b := setup(t, options{gwCfg: func(c *gatewayConfig) { c.SweepInterval = time.Hour }}) // no sweeper: the reply path itself must notice
	id := b.open(t, map[string]string{"Request-Timeout": "1"})
	time.Sleep(1100 * time.Millisecond)
	requireProblem(t, b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", id), `{"late": true}`), 410, "reply-late")
	require.Equal(t, "expired", b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["status"])
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND reason = 'late'`, id))
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	h := b.do(t, "GET", "/healthz", nil, "")
	require.Equal(t, 200, h.status)
	r := b.do(t, "GET", "/readyz", nil, "")
	require.Equal(t, 200, r.status, "body: %s", r.body)
	require.Equal(t, "ready", r.json(t)["status"])
	m := b.do(t, "GET", "/metrics", nil, "")
	require.Equal(t, 200, m.status)
	require.True(t, strings.HasPrefix(m.header.Get("Content-Type"), "text/plain"))
	require.Contains(t, string(m.body), "switchboard_broker_reconnects_total")
}

// queueDepth is the number of ready messages in q.
func (b *bundle) queueDepth(t *testing.T, q string) int {
	t.Helper()
	conn, err := amqp.Dial(b.amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	require.NoError(t, err)
	return st.Messages
}

func TestResponderSDKErrorsAndPanicsFailTheRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.responder(t, "errs", func(_ context.Context, req responder.Request) (any, error) {
		switch req.RoutingKey {
		case "sdk.error":
			return nil, errors.New("no such workflow")
		case "sdk.panic":
			panic("boom")
		}
		// Everything the SDK decodes reaches the handler.
		if req.ID == "" || req.Time == 0 || req.Deadline.IsZero() || string(req.Body) != `{"q": 1}` {
			return nil, errors.New("request fields missing")
		}
		return json.RawMessage(`{"ok": true}`), nil
	}, "sdk.*")

	res := b.do(t, "POST", "/sdk/error", with(jsonCT, "Prefer", "wait=10"), `{}`)
	require.Equal(t, 200, res.status)
	rec := res.json(t)
	require.Equal(t, "failed", rec["status"])
	require.Equal(t, "no such workflow", rec["reply"].(map[string]any)["body"].(map[string]any)["error"])

	res = b.do(t, "POST", "/sdk/panic", with(jsonCT, "Prefer", "wait=10"), `{}`)
	require.Equal(t, "failed", res.json(t)["status"])

	res = b.do(t, "POST", "/sdk/ok", with(jsonCT, "Prefer", "wait=10"), `{"q": 1}`)
	rec = res.json(t)
	require.Equal(t, "replied", rec["status"], "body: %s", res.body)
	require.Equal(t, true, rec["reply"].(map[string]any)["body"].(map[string]any)["ok"])
}

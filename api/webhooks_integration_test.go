package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/gateway"
	"github.com/switchboard-gw/switchboard/webhook"
	"github.com/switchboard-gw/switchboard/webhook/signature"
)

// hookReceiver is a webhook endpoint on loopback: it answers with the
// current status and keeps what it was sent.
type hookReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	status int
	got    []hookCall
}

type hookCall struct {
	header http.Header
	body   []byte
}

func newHookReceiver(t *testing.T, status int) *hookReceiver {
	t.Helper()
	h := &hookReceiver{status: status}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got = append(h.got, hookCall{header: r.Header.Clone(), body: body})
		status := h.status
		h.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) setStatus(s int) { h.mu.Lock(); h.status = s; h.mu.Unlock() }

func (h *hookReceiver) calls() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookCall(nil), h.got...)
}

// events binds a queue of the test's to the events exchange for patterns.
func (b *bundle) events(t *testing.T, name string, patterns ...string) (*amqp.Channel, string) {
	t.Helper()
	ch, q := b.bindQueue(t, name)
	require.NoError(t, ch.ExchangeDeclare(b.names.EventsExchange, "topic", true, false, false, false, nil))
	for _, p := range patterns {
		require.NoError(t, ch.QueueBind(q, p, b.names.EventsExchange, false, nil))
	}
	return ch, q
}

// noMore requires q to stay empty for a while.
func noMore(t *testing.T, ch *amqp.Channel, q string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		m, ok, err := ch.Get(q, false)
		require.NoError(t, err)
		require.False(t, ok, "unexpected message %s: %s", m.RoutingKey, m.Body)
		time.Sleep(20 * time.Millisecond)
	}
}

func eventData(t *testing.T, d amqp.Delivery) (string, map[string]any) {
	t.Helper()
	var ev struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal(d.Body, &ev))
	return ev.Type, ev.Data
}

// The whole path: POST with Reply-To, a responder replies over AMQP, the
// receiver gets the signed record, the record and the delivery log show
// it, and the responder side hears reply.delivered once.
func TestWebhookDeliversTheReply(t *testing.T) {
	t.Parallel()
	b := setup(t, options{webhooks: func(*webhook.Config) {}})
	b.echo(t, "echo", "hook.#")
	ch, q := b.events(t, "receipts", "reply.delivered.#")
	rcv := newHookReceiver(t, http.StatusOK)

	res := b.do(t, "POST", "/hook/me", with(jsonCT, "Reply-To", rcv.URL+"/cb?x=1"), `{"n": 1}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	id := res.header.Get("Message-ID")
	require.Nil(t, res.json(t)["delivery"], "nothing to deliver before the request ends")

	require.Eventually(t, func() bool { return len(rcv.calls()) == 1 }, 10*time.Second, 10*time.Millisecond)
	c := rcv.calls()[0]
	secret, err := signature.ParseSecret(testWebhookSecret)
	require.NoError(t, err)
	require.NoError(t, signature.Verify(c.header, c.body, time.Now(), 0, secret))
	require.Equal(t, id, c.header.Get("webhook-id"))
	var payload struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal(c.body, &payload))
	require.Equal(t, "request.replied", payload.Type)
	require.Equal(t, id, payload.Data["id"])
	require.Equal(t, "replied", payload.Data["status"])
	require.Equal(t, "Everything is awesome", payload.Data["reply"].(map[string]any)["body"].(map[string]any)["result"])
	require.NotContains(t, payload.Data, "delivery", "the payload is the same on every attempt")

	// Polled through the delivery log, which is not a read of the reply: a
	// GET of the record before the attempt is recorded would be the first
	// read, and the receipt would say "read".
	require.Eventually(t, func() bool {
		log := b.do(t, "GET", "/v1/requests/"+id+"/deliveries", nil, "").json(t)
		attempts, _ := log["attempts"].([]any)
		return len(attempts) == 1 && attempts[0].(map[string]any)["outcome"] == "delivered"
	}, 10*time.Second, 20*time.Millisecond)
	rec := b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)
	d := rec["delivery"].(map[string]any)
	require.Equal(t, "delivered", d["state"])
	require.Equal(t, rcv.URL+"/cb?x=1", d["url"])
	require.EqualValues(t, 1, d["attempts"])
	require.EqualValues(t, 200, d["last_status"])
	require.Nil(t, d["next_attempt_at"])
	require.NotNil(t, d["done_at"])

	log := b.do(t, "GET", "/v1/requests/"+id+"/deliveries", nil, "")
	require.Equal(t, 200, log.status, "body: %s", log.body)
	attempts := log.json(t)["attempts"].([]any)
	require.Len(t, attempts, 1)
	a := attempts[0].(map[string]any)
	require.EqualValues(t, 1, a["attempt"])
	require.Equal(t, "delivered", a["outcome"])
	require.EqualValues(t, 200, a["http_status"])

	// The receipt comes from the webhook, and only once: the GETs above
	// read a reply already delivered.
	ev := getOne(t, ch, q)
	require.Equal(t, "reply.delivered.hook.me", ev.RoutingKey)
	typ, data := eventData(t, ev)
	require.Equal(t, "reply.delivered", typ)
	require.Equal(t, id, data["id"])
	require.Equal(t, "webhook", data["via"])
	noMore(t, ch, q, 500*time.Millisecond)
}

// A receiver that keeps failing: the delivery gives up, is visible as
// failed with a dead letter, and an operator's retry delivers it.
func TestWebhookRetryAfterGivingUp(t *testing.T) {
	t.Parallel()
	b := setup(t, options{webhooks: func(c *webhook.Config) {
		c.Schedule = []time.Duration{0, 100 * time.Millisecond}
	}})
	b.echo(t, "echo", "hook.#")
	rcv := newHookReceiver(t, http.StatusInternalServerError)

	res := b.do(t, "POST", "/hook/retry", with(jsonCT, "Reply-To", rcv.URL), `{}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	id := res.header.Get("Message-ID")

	var d map[string]any
	require.Eventually(t, func() bool {
		d, _ = b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["delivery"].(map[string]any)
		return d != nil && d["state"] == "failed"
	}, 10*time.Second, 20*time.Millisecond)
	require.EqualValues(t, 2, d["attempts"])
	require.EqualValues(t, 500, d["last_status"])
	require.Equal(t, "the receiver answered 500", d["last_error"])
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND reason = 'webhook_failed'`, id))

	rcv.setStatus(http.StatusNoContent)
	retry := b.do(t, "POST", "/v1/requests/"+id+"/deliveries/retry", nil, "")
	require.Equal(t, 202, retry.status, "body: %s", retry.body)
	require.Equal(t, "pending", retry.json(t)["state"])
	require.Eventually(t, func() bool {
		d, _ = b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["delivery"].(map[string]any)
		return d != nil && d["state"] == "delivered"
	}, 10*time.Second, 20*time.Millisecond)
	require.EqualValues(t, 3, d["attempts"])
	requireProblem(t, b.do(t, "POST", "/v1/requests/"+id+"/deliveries/retry", nil, ""), 409, "delivery-not-failed")

	attempts := b.do(t, "GET", "/v1/requests/"+id+"/deliveries", nil, "").json(t)["attempts"].([]any)
	require.Len(t, attempts, 3)
	require.Equal(t, "retry", attempts[0].(map[string]any)["outcome"])
	require.Equal(t, "failed", attempts[1].(map[string]any)["outcome"])
	require.Equal(t, "delivered", attempts[2].(map[string]any)["outcome"])
}

func TestDeliveriesOfARequestWithoutWebhook(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	id := b.open(t, nil)
	res := b.do(t, "GET", "/v1/requests/"+id+"/deliveries", nil, "")
	require.Equal(t, 200, res.status, "body: %s", res.body)
	require.JSONEq(t, `{"request_id": "`+id+`", "delivery": null, "attempts": []}`, string(res.body))
	requireProblem(t, b.do(t, "POST", "/v1/requests/"+id+"/deliveries/retry", nil, ""), 404, "not-found")
	requireProblem(t, b.do(t, "GET", "/v1/requests/0190f3c2-0000-7000-8000-000000000000/deliveries", nil, ""), 404, "not-found")

	// With Reply-To but still open: nothing to deliver yet.
	open := b.open(t, map[string]string{"Reply-To": "http://127.0.0.1:9/hook"})
	res = b.do(t, "GET", "/v1/requests/"+open+"/deliveries", nil, "")
	require.Equal(t, 200, res.status, "body: %s", res.body)
	require.Nil(t, res.json(t)["delivery"])
	requireProblem(t, b.do(t, "POST", "/v1/requests/"+open+"/deliveries/retry", nil, ""), 404, "not-found")
	requireProblem(t, b.do(t, "POST", "/v1/requests/0190f3c2-0000-7000-8000-000000000000/deliveries/retry", nil, ""), 404, "not-found")
}

// Reply-To URLs whose host is an internal address are refused when the
// request is submitted; host names are checked when connecting.
func TestReplyToInternalAddressIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	for _, u := range []string{
		"http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]/hook",
		"http://127.0.0.2/hook", "http://192.168.1.1/hook", "http://[::ffff:10.0.0.1]/hook",
		"http://user:pw@hooks.example.com/hook",
	} {
		res := b.do(t, "POST", "/hook/me", with(jsonCT, "Reply-To", u), `{}`)
		requireProblem(t, res, 400, "invalid-header")
		require.Contains(t, res.json(t)["detail"], "Reply-To", u)
	}
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM requests`), "nothing was recorded")
}

// Reading a reply is its receipt: reply.delivered is published once, on
// the first read that returns it, and not for a read of a pending request.
func TestReadingAReplyAnnouncesItOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	ch, q := b.events(t, "receipts", "reply.delivered.#")
	id := b.open(t, nil)
	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+id, nil, "").status)
	noMore(t, ch, q, 300*time.Millisecond)

	b.reply(t, id, `{"done": true}`, nil)
	got := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "")
	require.Equal(t, "replied", got.json(t)["status"])
	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+id+"/reply", nil, "").status)
	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+id, nil, "").status)

	ev := getOne(t, ch, q)
	require.Equal(t, "reply.delivered.open.request", ev.RoutingKey)
	typ, data := eventData(t, ev)
	require.Equal(t, "reply.delivered", typ)
	require.Equal(t, id, data["id"])
	require.Equal(t, "read", data["via"])
	require.Equal(t, "replied", data["status"])
	noMore(t, ch, q, 500*time.Millisecond)
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM requests WHERE id = $1 AND reply_delivered_at IS NOT NULL`, id))
}

// With receipts off, reads record and announce nothing, while the other
// lifecycle events still flow.
func TestReceiptsOffAnnounceNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, options{gwCfg: func(c *gateway.Config) { c.ReplyReceipts = false }})
	receipts, rq := b.events(t, "receipts", "reply.delivered.#")
	replied, pq := b.events(t, "replied", "request.replied.#")
	id := b.open(t, nil)

	b.reply(t, id, `{"done": true}`, nil)
	got := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "")
	require.Equal(t, "replied", got.json(t)["status"])
	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+id+"/reply", nil, "").status)

	ev := getOne(t, replied, pq)
	require.Equal(t, "request.replied.open.request", ev.RoutingKey)
	noMore(t, receipts, rq, 500*time.Millisecond)
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM requests WHERE id = $1 AND reply_delivered_at IS NOT NULL`, id))
}

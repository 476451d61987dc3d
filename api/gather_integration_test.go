package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/api"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/responder"
	"github.com/switchboard-gw/switchboard/webhook"
)

// named starts a responder SDK service with its own queue and app id (the
// identity a gathering request keeps one reply of) that answers with its
// name once release (when not nil) is closed.
func (b *bundle) named(t *testing.T, appID string, release <-chan struct{}, patterns ...string) {
	t.Helper()
	b.responderWith(t, responder.Config{
		Queue: "gather-" + appID, Patterns: patterns, AppID: appID, NoReceivedEvents: true,
	}, func(ctx context.Context, req responder.Request) (any, error) {
		if release != nil {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return map[string]any{"from": appID}, nil
	})
}

// replyFrom publishes a raw AMQP reply with an app id and a message id.
func (b *bundle) replyFrom(t *testing.T, correlationID, appID, messageID, body string) {
	t.Helper()
	conn, err := amqp.Dial(b.amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Confirm(false))
	c, err := ch.PublishWithDeferredConfirm("", b.names.ReplyQueue, false, false, amqp.Publishing{
		CorrelationId: correlationID, MessageId: messageID, AppId: appID, ContentType: "application/json",
		DeliveryMode: amqp.Persistent, Body: []byte(body),
	})
	require.NoError(t, err)
	require.True(t, c.Wait(), "reply not confirmed")
}

// replyFroms lists who sent a record's replies, in order.
func replyFroms(t *testing.T, rec map[string]any) []string {
	t.Helper()
	var out []string
	for _, r := range rec["replies"].([]any) {
		out = append(out, r.(map[string]any)["from"].(string))
	}
	return out
}

// Three responders answer one Expect-Replies: 3 request. A long-poll that
// waits from the start is woken only by the third reply, and the record
// lists all three, the first being the record's reply.
func TestGatherThreeReplies(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	gates := map[string]chan struct{}{"alpha": make(chan struct{}), "beta": make(chan struct{}), "gamma": make(chan struct{})}
	for name, gate := range gates {
		b.named(t, name, gate, "survey.#")
	}
	res := b.do(t, "POST", "/survey/prices", with(jsonCT, "Expect-Replies", "3"), `{"item": "bolt"}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	id := res.header.Get("Message-ID")
	rec := res.json(t)
	require.EqualValues(t, 3, rec["replies_expected"])
	require.Empty(t, rec["replies"])

	polled := make(chan response, 1)
	go func() { polled <- b.do(t, "GET", "/v1/requests/"+id+"?wait=15", nil, "") }()
	time.Sleep(200 * time.Millisecond) // the long-poll is waiting

	close(gates["beta"])
	require.Eventually(t, func() bool {
		return len(b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["replies"].([]any)) == 1
	}, 10*time.Second, 20*time.Millisecond)
	close(gates["alpha"])
	require.Eventually(t, func() bool {
		return len(b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["replies"].([]any)) == 2
	}, 10*time.Second, 20*time.Millisecond)
	rec = b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)
	require.Equal(t, "pending", rec["status"], "two of three is not done")
	require.Equal(t, "beta", rec["reply"].(map[string]any)["body"].(map[string]any)["from"], "the first reply is the reply")
	select {
	case got := <-polled:
		t.Fatalf("the long-poll returned before the third reply: %s", got.body)
	case <-time.After(300 * time.Millisecond):
	}

	close(gates["gamma"])
	var got response
	select {
	case got = <-polled:
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll was not woken by the third reply")
	}
	require.Equal(t, 200, got.status, "body: %s", got.body)
	rec = got.json(t)
	require.Equal(t, "replied", rec["status"])
	require.EqualValues(t, 3, rec["replies_expected"])
	require.Equal(t, []string{"beta", "alpha", "gamma"}, replyFroms(t, rec))
	for _, r := range rec["replies"].([]any) {
		r := r.(map[string]any)
		require.Equal(t, "ok", r["status"])
		require.Equal(t, id, r["correlation_id"])
		require.Equal(t, r["from"], r["body"].(map[string]any)["from"])
	}
	require.Equal(t, "beta", rec["reply"].(map[string]any)["body"].(map[string]any)["from"])

	body := b.do(t, "GET", "/v1/requests/"+id+"/reply", nil, "")
	require.Equal(t, 200, body.status)
	require.JSONEq(t, `{"from": "beta"}`, string(body.body), "the reply endpoint answers with the first reply")
	require.Equal(t, 3, b.count(t, `SELECT count(*) FROM request_replies WHERE request_id = $1`, id))
}

// Prefer: wait answers once every reply is in.
func TestGatherPreferWait(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.named(t, "one", nil, "quote.#")
	b.named(t, "two", nil, "quote.#")
	res := b.do(t, "POST", "/quote/me", with(jsonCT, "Expect-Replies", "2", "Prefer", "wait=10"), `{}`)
	require.Equal(t, 200, res.status, "body: %s", res.body)
	require.Equal(t, "wait=10", res.header.Get("Preference-Applied"))
	rec := res.json(t)
	require.Equal(t, "replied", rec["status"])
	require.ElementsMatch(t, []string{"one", "two"}, replyFroms(t, rec))
}

// Two of three responders answer: at the deadline the request ends partial
// with their two replies, announced by request.partial; a reply after that
// is a dead letter.
func TestGatherPartialAtDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	ch, q := b.events(t, "ends", "request.#")
	b.named(t, "north", nil, "poll.#")
	b.named(t, "south", nil, "poll.#")
	res := b.do(t, "POST", "/poll/all", with(jsonCT, "Expect-Replies", "3", "Request-Timeout", "1"), `{}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	id := res.header.Get("Message-ID")

	rec := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "").json(t)
	require.Equal(t, "partial", rec["status"])
	require.EqualValues(t, 3, rec["replies_expected"])
	require.ElementsMatch(t, []string{"north", "south"}, replyFroms(t, rec))
	require.NotNil(t, rec["reply"])

	var types []string
	require.Eventually(t, func() bool {
		m, ok, err := ch.Get(q, true)
		require.NoError(t, err)
		if ok {
			typ, data := eventData(t, m)
			if data["id"] == id {
				types = append(types, typ)
			}
		}
		return len(types) > 0 && types[len(types)-1] == "request.partial"
	}, 10*time.Second, 10*time.Millisecond, "events: %v", types)
	require.Equal(t, []string{"request.accepted", "request.partial"}, types)

	b.replyFrom(t, id, "east", testsvc.RandomSuffix(), `{"late": true}`)
	require.Eventually(t, func() bool {
		return b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND reason = 'late'`, id) == 1
	}, 5*time.Second, 20*time.Millisecond)
	require.Len(t, b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["replies"], 2)
}

// The same responder twice (a redelivery, a retry) is one reply; a
// responder is its app id over AMQP, its Reply-From over HTTP, else the
// reply's message id. Once the gather is complete, a known responder is a
// duplicate and a new one a dead letter.
func TestGatherAbsorbsDuplicates(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	id := b.open(t, map[string]string{"Expect-Replies": "3"})

	b.replyFrom(t, id, "a", "m-1", `{"n": 1}`)
	require.Eventually(t, func() bool {
		return len(b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["replies"].([]any)) == 1
	}, 5*time.Second, 20*time.Millisecond)
	b.replyFrom(t, id, "a", "m-2", `{"n": 2}`) // same responder, another message
	require.Eventually(t, func() bool { return b.queueDepth(t, b.names.ReplyQueue) == 0 }, 5*time.Second, 20*time.Millisecond)
	dup := b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", id, "Reply-From", "a"), `{"n": 3}`)
	require.Equal(t, 200, dup.status, "body: %s", dup.body)
	require.Equal(t, "duplicate", dup.json(t)["outcome"])
	rec := b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)
	require.Equal(t, "pending", rec["status"])
	require.Equal(t, []string{"a"}, replyFroms(t, rec))
	require.EqualValues(t, 1, rec["replies"].([]any)[0].(map[string]any)["body"].(map[string]any)["n"], "the first is kept")

	// No app id: the message id names the responder, so a redelivery of
	// the same message is absorbed.
	b.replyFrom(t, id, "", "m-9", `{"n": 9}`)
	b.replyFrom(t, id, "", "m-9", `{"n": 9}`)
	require.Eventually(t, func() bool { return b.queueDepth(t, b.names.ReplyQueue) == 0 }, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"a", "m-9"}, replyFroms(t, b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)))

	ok := b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", id, "Reply-From", "b", "Reply-Status", "error"), `{"error": "no stock"}`)
	require.Equal(t, 200, ok.status, "body: %s", ok.body)
	require.Equal(t, "stored", ok.json(t)["outcome"])
	rec = b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)
	require.Equal(t, "replied", rec["status"], "an error reply counts; the request failed only if all did")
	require.Equal(t, []string{"a", "m-9", "b"}, replyFroms(t, rec))
	require.Equal(t, "error", rec["replies"].([]any)[2].(map[string]any)["status"])

	again := b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", id, "Reply-From", "b"), `{}`)
	require.Equal(t, "duplicate", again.json(t)["outcome"])
	requireProblem(t, b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", id, "Reply-From", "c"), `{}`), 410, "reply-closed")
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND reason <> 'closed'`, id))
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND reason = 'closed'`, id))
	require.Equal(t, 3, b.count(t, `SELECT count(*) FROM request_replies WHERE request_id = $1`, id))
}

// Every gathered reply is an error: the request fails.
func TestGatherAllErrorsFails(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	id := b.open(t, map[string]string{"Expect-Replies": "2"})
	for _, from := range []string{"x", "y"} {
		res := b.do(t, "POST", "/v1/replies", with(jsonCT, "Correlation-ID", id, "Reply-From", from, "Reply-Status", "error"), `{"error": "down"}`)
		require.Equal(t, 200, res.status, "body: %s", res.body)
	}
	rec := b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)
	require.Equal(t, "failed", rec["status"])
	require.Len(t, rec["replies"], 2)
}

// Expect-Replies: all gathers until the deadline: replied with what came,
// expired with nothing.
func TestGatherAllUntilDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.named(t, "p", nil, "census.#")
	b.named(t, "q", nil, "census.#")
	res := b.do(t, "POST", "/census/run", with(jsonCT, "Expect-Replies", "all", "Request-Timeout", "1"), `{}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	require.Nil(t, res.json(t)["replies_expected"])
	id := res.header.Get("Message-ID")
	// Both replies are in well before the deadline, and it is still open.
	require.Eventually(t, func() bool {
		return len(b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["replies"].([]any)) == 2
	}, 5*time.Second, 20*time.Millisecond)
	rec := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "").json(t)
	require.Equal(t, "replied", rec["status"])
	require.Nil(t, rec["replies_expected"])
	require.ElementsMatch(t, []string{"p", "q"}, replyFroms(t, rec))

	none := b.open(t, map[string]string{"Expect-Replies": "all", "Request-Timeout": "1"})
	rec = b.do(t, "GET", "/v1/requests/"+none+"?wait=10", nil, "").json(t)
	require.Equal(t, "expired", rec["status"])
	require.Empty(t, rec["replies"])
	require.Nil(t, rec["reply"])
}

// The webhook is delivered once, when the gather ends, with every reply;
// the SSE stream ends with the same final record.
func TestGatherWebhookAndStreamGetTheFinalRecord(t *testing.T) {
	t.Parallel()
	b := setup(t, options{webhooks: func(*webhook.Config) {}})
	release := make(chan struct{})
	b.named(t, "left", nil, "fan.#")
	b.named(t, "right", release, "fan.#")
	rcv := newHookReceiver(t, http.StatusOK)
	res := b.do(t, "POST", "/fan/out", with(jsonCT, "Expect-Replies", "2", "Reply-To", rcv.URL), `{}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	id := res.header.Get("Message-ID")
	_, stream := b.openStream(t, "/v1/requests/"+id+"/events", nil)

	require.Eventually(t, func() bool {
		return len(b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["replies"].([]any)) == 1
	}, 10*time.Second, 20*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.Empty(t, rcv.calls(), "nothing is delivered while the gather is open")
	close(release)

	require.Eventually(t, func() bool { return len(rcv.calls()) == 1 }, 10*time.Second, 10*time.Millisecond)
	var payload struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	require.NoError(t, json.Unmarshal(rcv.calls()[0].body, &payload))
	require.Equal(t, "request.replied", payload.Type)
	require.Equal(t, "replied", payload.Data["status"])
	require.ElementsMatch(t, []string{"left", "right"}, replyFroms(t, payload.Data))
	require.EqualValues(t, 2, payload.Data["replies_expected"])

	evs := collect(t, stream)
	require.NotEmpty(t, evs)
	last := evs[len(evs)-1]
	require.Equal(t, "reply", last.event)
	var final map[string]any
	require.NoError(t, json.Unmarshal([]byte(last.data), &final))
	require.Equal(t, "replied", final["status"])
	require.ElementsMatch(t, []string{"left", "right"}, replyFroms(t, final))

	time.Sleep(300 * time.Millisecond)
	require.Len(t, rcv.calls(), 1, "delivered once")
}

// An ordinary request's record lists its one reply too, named by the
// responder's app id.
func TestSingleReplyRecordListsItsReply(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	id := b.open(t, nil)
	b.replyFrom(t, id, "solo", "m-1", `{"ok": true}`)
	rec := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "").json(t)
	require.Equal(t, "replied", rec["status"])
	require.EqualValues(t, 1, rec["replies_expected"])
	require.Equal(t, []string{"solo"}, replyFroms(t, rec))
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM request_replies`), "single replies stay on the requests row")
}

func TestExpectRepliesRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.bindQueue(t, "silent", "bad.#")
	for _, v := range []string{"0", "101", "-1", "two", "2.5", "all; window=5", "3, 4"} {
		res := b.do(t, "POST", "/bad/expect", with(jsonCT, "Expect-Replies", v), `{}`)
		requireProblem(t, res, 400, "invalid-header")
	}
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM requests`), "nothing is written")
}

// A route-level default applies to requests that send no Expect-Replies;
// the header overrides it.
func TestGatherRouteDefault(t *testing.T) {
	t.Parallel()
	b := setup(t, options{apiCfg: func(c *api.Config) {
		c.ExpectReplies = []api.RouteExpect{{Pattern: "survey.#", N: 2}}
	}})
	b.bindQueue(t, "silent", "survey.#", "other.#")
	for _, tc := range []struct {
		path   string
		header []string
		want   any
	}{
		{"/survey/run", nil, 2.0},
		{"/survey/run", []string{"Expect-Replies", "1"}, 1.0},
		{"/survey/run", []string{"Expect-Replies", "all"}, nil},
		{"/other/run", nil, 1.0},
	} {
		res := b.do(t, "POST", tc.path, with(jsonCT, tc.header...), `{}`)
		require.Equal(t, 202, res.status, "body: %s", res.body)
		require.Equal(t, tc.want, res.json(t)["replies_expected"], "%s %v", tc.path, tc.header)
	}
}

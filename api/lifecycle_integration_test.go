package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

func TestCancelWakesWaitersAndAnnouncesIt(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	// A responder-side subscription to cancellations of open.* requests.
	ch, q := b.bindQueue(t, "cancels")
	require.NoError(t, ch.ExchangeDeclare(b.names.EventsExchange, "topic", true, false, false, false, nil))
	require.NoError(t, ch.QueueBind(q, "request.cancelled.open.#", b.names.EventsExchange, false, nil))
	id := b.open(t, nil)

	waiter := make(chan response, 1)
	go func() { waiter <- b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "") }()
	require.Eventually(t, func() bool { return b.store.Waiters() == 1 }, 5*time.Second, 10*time.Millisecond)

	res := b.do(t, "DELETE", "/v1/requests/"+id, nil, "")
	require.Equal(t, 200, res.status, "body: %s", res.body)
	require.Equal(t, "cancelled", res.json(t)["status"])
	select {
	case w := <-waiter:
		require.Equal(t, "cancelled", w.json(t)["status"])
	case <-time.After(5 * time.Second):
		t.Fatal("the long-poll was not woken by the cancellation")
	}

	d := getOne(t, ch, q)
	require.Equal(t, "request.cancelled.open.request", d.RoutingKey)
	require.Equal(t, "application/cloudevents+json", d.ContentType)
	var ev map[string]any
	require.NoError(t, json.Unmarshal(d.Body, &ev))
	require.Equal(t, "1.0", ev["specversion"])
	require.Equal(t, "request.cancelled", ev["type"])
	require.Equal(t, id, ev["correlationid"])
	require.Equal(t, id, ev["subject"])
	require.Equal(t, "open.request", ev["data"].(map[string]any)["routing_key"])

	// Idempotent: cancelling again answers the same.
	again := b.do(t, "DELETE", "/v1/requests/"+id, nil, "")
	require.Equal(t, 200, again.status)
	// The responder's reply after the cancellation is kept, not stored.
	b.reply(t, id, `{"done": "anyway"}`, nil)
	require.Eventually(t, func() bool {
		return b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND reason = 'closed'`, id) == 1
	}, 5*time.Second, 20*time.Millisecond)
	requireProblem(t, b.do(t, "GET", "/v1/requests/"+id+"/reply", nil, ""), 410, "cancelled")

	// A finished request cannot be cancelled; unknown ids are 404.
	done := b.open(t, nil)
	b.reply(t, done, `{}`, nil)
	require.Equal(t, "replied", b.do(t, "GET", "/v1/requests/"+done+"?wait=10", nil, "").json(t)["status"])
	requireProblem(t, b.do(t, "DELETE", "/v1/requests/"+done, nil, ""), 409, "not-cancellable")
	requireProblem(t, b.do(t, "DELETE", "/v1/requests/"+uuid.NewString(), nil, ""), 404, "not-found")
}

func TestCancelWhileBrokerDownIsAnnouncedLater(t *testing.T) {
	t.Parallel()
	amqpURL := testsvc.AMQPURL(t)
	proxy := testsvc.NewProxy(t, testsvc.HostOf(t, amqpURL))
	b := setup(t, options{amqpURL: testsvc.WithHost(t, amqpURL, proxy.Addr())})
	ch, q := b.bindQueue(t, "cancels")
	require.NoError(t, ch.ExchangeDeclare(b.names.EventsExchange, "topic", true, false, false, false, nil))
	require.NoError(t, ch.QueueBind(q, "request.cancelled.#", b.names.EventsExchange, false, nil))
	id := b.open(t, nil)

	proxy.Cut()
	require.Eventually(t, func() bool { return !b.gw.Connected() }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 200, b.do(t, "DELETE", "/v1/requests/"+id, nil, "").status)
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM event_outbox WHERE routing_key LIKE 'request.cancelled.%'`), "the event waits in the outbox")
	proxy.Restore()
	d := getOne(t, ch, q)
	require.Contains(t, string(d.Body), id)
	require.Eventually(t, func() bool { return b.count(t, `SELECT count(*) FROM event_outbox`) == 0 }, 5*time.Second, 20*time.Millisecond)
}

func TestDeadLettersAreListed(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	ids := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	for i, id := range ids { // one at a time: replies are stored concurrently, in no set order
		b.reply(t, id, `{"orphan": "`+id+`"}`, amqp.Table{"trace": "x"})
		require.Eventually(t, func() bool { return b.count(t, `SELECT count(*) FROM dead_letters`) == i+1 }, 5*time.Second, 10*time.Millisecond)
	}

	page := b.do(t, "GET", "/v1/dead-letters?limit=2", nil, "")
	require.Equal(t, 200, page.status)
	var p struct {
		DeadLetters []struct {
			ID            int64          `json:"id"`
			Reason        string         `json:"reason"`
			Source        string         `json:"source"`
			CorrelationID string         `json:"correlation_id"`
			Headers       map[string]any `json:"headers"`
			Body          map[string]any `json:"body"`
			BodyBase64    string         `json:"body_base64"`
		} `json:"dead_letters"`
		NextBefore int64 `json:"next_before"`
	}
	require.NoError(t, json.Unmarshal(page.body, &p))
	require.Len(t, p.DeadLetters, 2)
	require.Equal(t, p.DeadLetters[1].ID, p.NextBefore)
	first := p.DeadLetters[0]
	require.Equal(t, "unknown", first.Reason)
	require.Equal(t, "amqp", first.Source)
	require.Equal(t, ids[2], first.CorrelationID, "newest first")
	require.Equal(t, ids[2], first.Body["orphan"])
	raw, err := base64.StdEncoding.DecodeString(first.BodyBase64)
	require.NoError(t, err)
	require.JSONEq(t, `{"orphan": "`+ids[2]+`"}`, string(raw))
	require.Equal(t, "x", first.Headers["header:trace"])

	rest := b.do(t, "GET", "/v1/dead-letters?limit=2&before="+jsonInt(p.NextBefore), nil, "")
	require.NoError(t, json.Unmarshal(rest.body, &p))
	require.Len(t, p.DeadLetters, 1)
	require.Equal(t, ids[0], p.DeadLetters[0].CorrelationID)
	require.Zero(t, p.NextBefore)

	requireProblem(t, b.do(t, "GET", "/v1/dead-letters?limit=0", nil, ""), 400, "invalid-parameter")
	requireProblem(t, b.do(t, "GET", "/v1/dead-letters?before=x", nil, ""), 400, "invalid-parameter")
	require.EqualValues(t, 3, b.do(t, "GET", "/readyz", nil, "").json(t)["dead_letters"])
}

// A reply that keeps being requeued (here by a rogue consumer) is
// dead-lettered by the broker at the delivery limit, and the gateway records
// it: one bad message cannot loop forever, and it is not lost either.
func TestDeliveryLimitDeadLettersAndRecords(t *testing.T) {
	t.Parallel()
	amqpURL := testsvc.AMQPURL(t)
	proxy := testsvc.NewProxy(t, testsvc.HostOf(t, amqpURL))
	proxy.Cut() // the gateway stays away while the rogue consumer works
	names := testsvc.BrokerNames(t)
	b := setup(t, options{amqpURL: testsvc.WithHost(t, amqpURL, proxy.Addr()), names: &names, noBroker: true,
		gwCfg: func(c *gatewayConfig) { c.ReplyDeliveryLimit = 2 }})

	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(names.DeadLetterExchange, "fanout", true, false, false, false, nil))
	_, err = ch.QueueDeclare(names.DeadLetterQueue, true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(names.DeadLetterQueue, "", names.DeadLetterExchange, false, nil))
	_, err = ch.QueueDeclare(names.ReplyQueue, true, false, false, false, amqp.Table{
		"x-queue-type": "quorum", "x-delivery-limit": int64(2), "x-dead-letter-exchange": names.DeadLetterExchange})
	require.NoError(t, err)

	poison := uuid.NewString()
	b.reply(t, poison, `{"poison": true}`, nil)
	deliveries, err := ch.Consume(names.ReplyQueue, "rogue", false, false, false, false, nil)
	require.NoError(t, err)
	for i := 0; i < 3; i++ { // first delivery + 2 redeliveries = over the limit
		select {
		case d := <-deliveries:
			require.NoError(t, d.Nack(false, true))
		case <-time.After(5 * time.Second):
			t.Fatalf("delivery %d never came", i+1)
		}
	}
	require.NoError(t, ch.Cancel("rogue", false))

	proxy.Restore()
	require.Eventually(t, b.gw.Connected, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		return b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND reason = 'delivery_limit'`, poison) == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 0, b.queueDepth(t, names.ReplyQueue))
	require.Equal(t, 0, b.queueDepth(t, names.DeadLetterQueue), "recorded, then acked")
	m := b.do(t, "GET", "/metrics", nil, "")
	require.Contains(t, string(m.body), `switchboard_dead_letters_total{reason="delivery_limit"} 1`)
}

func TestRetentionPurgesFinishedRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, options{gwCfg: func(c *gatewayConfig) { c.Retention = time.Minute; c.PurgeInterval = 100 * time.Millisecond }})
	old := b.open(t, nil)
	b.reply(t, old, `{}`, nil)
	require.Equal(t, "replied", b.do(t, "GET", "/v1/requests/"+old+"?wait=10", nil, "").json(t)["status"])
	open := b.open(t, nil)
	_, err := b.pool.Exec(context.Background(), `UPDATE requests SET updated_at = now() - interval '2 minutes'`) // both look old
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return b.do(t, "GET", "/v1/requests/"+old, nil, "").status == 404
	}, 5*time.Second, 50*time.Millisecond, "the finished request is removed after retention")
	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+open, nil, "").status, "an open request is never purged")
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

package rules

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SWITCHBOARD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func TestEventFromBody(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	fallback := Event{ID: "fb-id", Source: "fb-source", Type: "fb-type", Time: at, Hops: 1}
	tests := []struct {
		name string
		body string
		want Event
	}{
		{"structured cloudevent taken as is",
			`{"specversion":"1.0","id":"e1","source":"archive","type":"ingestion-complete","time":"2026-01-02T03:04:05.5Z","subject":"obs-1","data":{"instrument":"VLA"},"switchboardhops":3}`,
			Event{ID: "e1", Source: "archive", Type: "ingestion-complete", Time: time.Date(2026, 1, 2, 3, 4, 5, 5e8, time.UTC),
				Subject: "obs-1", Data: json.RawMessage(`{"instrument":"VLA"}`), Hops: 3}},
		{"cloudevent lacking attributes gets the fallback's",
			`{"specversion":"1.0","type":"t","switchboardhops":"2"}`,
			Event{ID: "fb-id", Source: "fb-source", Type: "t", Time: at, Data: json.RawMessage(`null`), Hops: 2}},
		{"cloudevent keeps the fallback's hops when it has none",
			`{"specversion":"1.0","id":"x","data":[1]}`,
			Event{ID: "x", Source: "fb-source", Type: "fb-type", Time: at, Data: json.RawMessage(`[1]`), Hops: 1}},
		{"plain JSON object is the data",
			` {"type":"workflow-status","capability_id":"c1"} `,
			Event{ID: "fb-id", Source: "fb-source", Type: "fb-type", Time: at,
				Data: json.RawMessage(`{"type":"workflow-status","capability_id":"c1"}`), Hops: 1}},
		{"JSON scalar is the data", `42`,
			Event{ID: "fb-id", Source: "fb-source", Type: "fb-type", Time: at, Data: json.RawMessage(`42`), Hops: 1}},
		{"text is a JSON string", "file ready: a \"b\"\n",
			Event{ID: "fb-id", Source: "fb-source", Type: "fb-type", Time: at, Data: json.RawMessage(`"file ready: a \"b\"\n"`), Hops: 1}},
		{"empty body is an empty JSON string", "",
			Event{ID: "fb-id", Source: "fb-source", Type: "fb-type", Time: at, Data: json.RawMessage(`""`), Hops: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := eventFromBody([]byte(tc.body), fallback)
			require.Equal(t, tc.want.ID, got.ID)
			require.Equal(t, tc.want.Source, got.Source)
			require.Equal(t, tc.want.Type, got.Type)
			require.True(t, tc.want.Time.Equal(got.Time), "time %v", got.Time)
			require.Equal(t, tc.want.Subject, got.Subject)
			require.JSONEq(t, string(tc.want.Data), string(got.Data))
			require.Equal(t, tc.want.Hops, got.Hops)
		})
	}
}

func TestEventFromDelivery(t *testing.T) {
	t.Parallel()
	d := amqp.Delivery{Exchange: "switchboard.events", RoutingKey: "workspace.status", Body: []byte(`{"a":1}`),
		Headers: amqp.Table{"switchboardhops": int32(2)}}
	ev := eventFromDelivery(d)
	require.Equal(t, "amqp://switchboard.events/workspace.status", ev.Source)
	require.Equal(t, "workspace.status", ev.Type, "the routing key when there is no type property")
	require.Regexp(t, `^sha256:[0-9a-f]{64}$`, ev.ID)
	require.Equal(t, ev.ID, eventFromDelivery(d).ID, "the same message has the same id")
	require.Equal(t, 2, ev.Hops)
	require.JSONEq(t, `{"a":1}`, string(ev.Data))
	require.WithinDuration(t, time.Now(), ev.Time, time.Minute)

	d.MessageId, d.Type, d.Timestamp = "m-1", "workflow-status", time.Unix(1700000000, 0)
	ev = eventFromDelivery(d)
	require.Equal(t, "m-1", ev.ID)
	require.Equal(t, "workflow-status", ev.Type)
	require.True(t, ev.Time.Equal(time.Unix(1700000000, 0)))
}

// publishTo publishes body to exchange with key, confirmed.
func publishTo(t *testing.T, amqpURL, exchange, key string, msg amqp.Publishing) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Confirm(false))
	c, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, msg)
	require.NoError(t, err)
	require.True(t, c.Wait(), "not confirmed")
}

// queueDepth is the number of ready messages in q.
func queueDepth(t *testing.T, amqpURL, q string) int {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	info, err := ch.QueueDeclarePassive(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	require.NoError(t, err)
	return info.Messages
}

// runSource runs s with h until the test ends.
func runSource(t *testing.T, s Source, h Handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx, h) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func waitReady(t *testing.T, ready <-chan struct{}) {
	t.Helper()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("source never became ready")
	}
}

func TestAMQPSource(t *testing.T) {
	t.Parallel()
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	names.Queue("workspace") // tracked for cleanup
	opts := AMQPOptions{URL: amqpURL, QueuePrefix: names.Prefix, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}
	src := NewAMQPSource("workspace", AMQPSource{Exchange: names.EventsExchange, Bindings: []string{"workspace.#"}}, opts, testLogger(t))
	require.Equal(t, names.Prefix+".workspace", src.Queue())

	got := make(chan Event, 10)
	var failures atomic.Int32
	stop := runSource(t, src, func(_ context.Context, ev Event) error {
		if ev.Type == "flaky" && failures.Add(1) <= 2 {
			return errors.New("postgres away")
		}
		got <- ev
		return nil
	})
	waitReady(t, src.Ready())

	publishTo(t, amqpURL, names.EventsExchange, "other.thing", amqp.Publishing{Body: []byte(`{"ignored":true}`)})
	publishTo(t, amqpURL, names.EventsExchange, "workspace.status", amqp.Publishing{
		MessageId: "m-1", Type: "workflow-status", ContentType: "application/json", Body: []byte(`{"capability_id":"c1"}`)})
	publishTo(t, amqpURL, names.EventsExchange, "workspace.ce", amqp.Publishing{
		Body: []byte(`{"specversion":"1.0","id":"ce-1","source":"ws","type":"flaky","data":{"n":1}}`)})

	var evs []Event
	for len(evs) < 2 {
		select {
		case ev := <-got:
			evs = append(evs, ev)
		case <-time.After(10 * time.Second):
			t.Fatalf("events: got %d, want 2", len(evs))
		}
	}
	byID := map[string]Event{evs[0].ID: evs[0], evs[1].ID: evs[1]}
	require.Contains(t, byID, "m-1")
	require.Equal(t, "workflow-status", byID["m-1"].Type)
	require.Equal(t, "amqp://"+names.EventsExchange+"/workspace.status", byID["m-1"].Source)
	require.JSONEq(t, `{"capability_id":"c1"}`, string(byID["m-1"].Data))
	require.Contains(t, byID, "ce-1")
	require.Equal(t, "ws", byID["ce-1"].Source)
	require.EqualValues(t, 3, failures.Load(), "the failing event was offered again until taken")
	select {
	case ev := <-got:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	stop()
	require.Zero(t, queueDepth(t, amqpURL, src.Queue()), "every taken event was acked")

	// A new configuration of the source drops a binding: events under it
	// no longer reach the queue.
	src2 := NewAMQPSource("workspace", AMQPSource{Exchange: names.EventsExchange, Bindings: []string{"capability.#"}}, opts, testLogger(t))
	src2.stale = []amqpBinding{{names.EventsExchange, "workspace.#"}}
	got2 := make(chan Event, 10)
	runSource(t, src2, func(_ context.Context, ev Event) error { got2 <- ev; return nil })
	waitReady(t, src2.Ready())
	publishTo(t, amqpURL, names.EventsExchange, "workspace.status", amqp.Publishing{MessageId: "m-2", Body: []byte(`{}`)})
	publishTo(t, amqpURL, names.EventsExchange, "capability.status", amqp.Publishing{MessageId: "m-3", Body: []byte(`{}`)})
	select {
	case ev := <-got2:
		require.Equal(t, "m-3", ev.ID)
	case <-time.After(10 * time.Second):
		t.Fatal("no event from the new binding")
	}
	select {
	case ev := <-got2:
		t.Fatalf("event %s came through a removed binding", ev.ID)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestAMQPSourceShutdownRequeues: an event the engine could not take when
// the source stops goes back to the queue, not lost.
func TestAMQPSourceShutdownRequeues(t *testing.T) {
	t.Parallel()
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	names.Queue("archive")
	src := NewAMQPSource("archive", AMQPSource{Exchange: names.EventsExchange, Bindings: []string{"#"}},
		AMQPOptions{URL: amqpURL, QueuePrefix: names.Prefix, RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond}, testLogger(t))
	var tries atomic.Int32
	stop := runSource(t, src, func(context.Context, Event) error { tries.Add(1); return errors.New("postgres away") })
	waitReady(t, src.Ready())
	publishTo(t, amqpURL, names.EventsExchange, "x", amqp.Publishing{MessageId: "keep-me", Body: []byte(`{}`)})
	require.Eventually(t, func() bool { return tries.Load() >= 2 }, 10*time.Second, 10*time.Millisecond)
	stop()
	require.Eventually(t, func() bool { return queueDepth(t, amqpURL, src.Queue()) == 1 }, 5*time.Second, 50*time.Millisecond)
}

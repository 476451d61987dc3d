package responder

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// receivedEvent is a progress event as a subscriber reads it.
type receivedEvent struct {
	delivery amqp.Delivery
	event    struct {
		cloudEvent
		Data progressData `json:"data"`
	}
}

// TestProgress has handlers report progress three times each, concurrently,
// then reply; a queue bound to progress.# on the events exchange must
// receive every event, in order per request, with the right attributes.
func TestProgress(t *testing.T) {
	t.Parallel()
	url := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)

	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(names.EventsExchange, "topic", true, false, false, false, nil))
	events, err := ch.QueueDeclare("", false, true, true, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(events.Name, "progress.#", names.EventsExchange, false, nil))
	replies, err := ch.QueueDeclare("", false, true, true, false, nil)
	require.NoError(t, err)

	misuse := make(chan error, 2)
	const requests = 8
	startResponder(t, Config{
		AMQPURL: url, Exchange: names.Exchange, Queue: names.Queue("svc"), Patterns: []string{"workflow.#"},
		EventsExchange: names.EventsExchange, AppID: "progress test", Concurrency: requests,
	}, func(ctx context.Context, req Request) (any, error) {
		if req.RoutingKey == "workflow.misuse" {
			misuse <- Progress(ctx, math.NaN(), "")
			misuse <- PublishEvent(ctx, "progress.*", nil)
			return map[string]bool{"ok": true}, nil
		}
		for _, p := range []struct {
			fraction float64
			message  string
		}{{0.25, "fetching"}, {0.5, "calibrating"}, {1.5, "done"}} {
			if err := Progress(ctx, p.fraction, p.message); err != nil {
				return nil, err
			}
		}
		return map[string]bool{"ok": true}, nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := map[string]bool{}
	for range requests {
		id := uuid.NewString()
		ids[id] = true
		require.NoError(t, ch.PublishWithContext(ctx, names.Exchange, "workflow.create", true, false, amqp.Publishing{
			MessageId: id, ReplyTo: replies.Name, ContentType: "application/json", Body: []byte(`{}`),
		}))
	}
	require.NoError(t, ch.PublishWithContext(ctx, names.Exchange, "workflow.misuse", true, false, amqp.Publishing{
		MessageId: uuid.NewString(), ReplyTo: replies.Name, Body: []byte(`{}`),
	}))

	replyDeliveries, err := ch.Consume(replies.Name, "", true, true, false, false, nil)
	require.NoError(t, err)
	for range requests + 1 {
		select {
		case d := <-replyDeliveries:
			require.Equal(t, "ok", d.Headers["status"], string(d.Body))
		case <-ctx.Done():
			t.Fatal("not every request was answered")
		}
	}
	require.ErrorContains(t, <-misuse, "NaN")
	require.ErrorContains(t, <-misuse, "without * or #")

	// Each event was confirmed before its handler replied, so all of them
	// are in the queue by now.
	got := map[string][]receivedEvent{}
	eventDeliveries, err := ch.Consume(events.Name, "", true, true, false, false, nil)
	require.NoError(t, err)
	for range 3 * requests {
		select {
		case d := <-eventDeliveries:
			var e receivedEvent
			e.delivery = d
			require.NoError(t, json.Unmarshal(d.Body, &e.event), string(d.Body))
			got[d.CorrelationId] = append(got[d.CorrelationId], e)
		case <-ctx.Done():
			t.Fatalf("only %d events arrived", len(got))
		}
	}
	select {
	case d := <-eventDeliveries:
		t.Fatalf("an event too many: %s", d.Body)
	case <-time.After(200 * time.Millisecond):
	}

	require.Len(t, got, requests)
	for id, evs := range got {
		require.True(t, ids[id], "an event about an unknown request %q", id)
		require.Len(t, evs, 3)
		eventIDs := map[string]bool{}
		for i, e := range evs {
			d, ev := e.delivery, e.event
			want := []progressData{{"running", 0.25, "fetching"}, {"running", 0.5, "calibrating"}, {"running", 1, "done"}}[i]
			require.Equal(t, want, ev.Data, "in order, and 1.5 clamped to 1")

			require.Equal(t, "1.0", ev.SpecVersion)
			require.Equal(t, "progress", ev.Type)
			require.Equal(t, "switchboard-responder/progress%20test", ev.Source)
			require.Equal(t, id, ev.Subject)
			require.Equal(t, id, ev.CorrelationID)
			require.Equal(t, "application/json", ev.DataContentType)
			require.WithinDuration(t, time.Now(), ev.Time, time.Minute)
			require.Equal(t, time.UTC, ev.Time.Location())
			_, err := uuid.Parse(ev.ID)
			require.NoError(t, err)
			require.False(t, eventIDs[ev.ID], "event ids are unique")
			eventIDs[ev.ID] = true

			require.Equal(t, "progress.workflow.create", d.RoutingKey)
			require.Equal(t, "application/cloudevents+json", d.ContentType)
			require.Equal(t, amqp.Persistent, d.DeliveryMode)
			require.Equal(t, id, d.CorrelationId)
			require.Equal(t, ev.ID, d.MessageId)
			require.Equal(t, "progress test", d.AppId)
			require.Equal(t, "progress", d.Type)
		}
	}
}

func TestProgressOutsideAHandler(t *testing.T) {
	t.Parallel()
	require.ErrorIs(t, Progress(context.Background(), 0.5, "x"), ErrNoRequest)
	require.ErrorIs(t, PublishEvent(context.Background(), "request.received", nil), ErrNoRequest)
	require.NotErrorIs(t, Progress(context.Background(), math.NaN(), "x"), ErrNoRequest, "arguments are checked first")
}

func TestBuildEvent(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 30, 45, 0, time.FixedZone("CET", 3600))
	b, err := buildEvent("e1", "progress", "switchboard-responder/svc", "r1", progressData{State: "running", Progress: 0.4}, now)
	require.NoError(t, err)
	require.JSONEq(t, `{"specversion":"1.0","id":"e1","source":"switchboard-responder/svc","type":"progress",
		"time":"2026-03-01T11:30:45Z","subject":"r1","datacontenttype":"application/json","correlationid":"r1",
		"data":{"state":"running","progress":0.4}}`, string(b))

	b, err = buildEvent("e2", "request.received", "s", "r1", nil, now)
	require.NoError(t, err)
	require.NotContains(t, string(b), `"data"`, "nil data is left out")

	b, err = buildEvent("e3", "t", "s", "r1", json.RawMessage(`[1, 2]`), now)
	require.NoError(t, err)
	require.Contains(t, string(b), `"data":[1,2]`)

	_, err = buildEvent("e4", "t", "s", "r1", json.RawMessage(`{`), now)
	require.Error(t, err)
	_, err = buildEvent("e5", "t", "s", "r1", func() {}, now)
	require.Error(t, err)
}

// TestEventsAreValidCloudEvents has the official CloudEvents SDK for
// JavaScript (installed for the gateway's test of the same kind) read the
// events the responder builds.
func TestEventsAreValidCloudEvents(t *testing.T) {
	t.Parallel()
	node, dir := cloudEventsChecker(t)
	now := time.Now()
	var bodies []json.RawMessage
	for i, c := range []struct {
		typ, source string
		data        any
	}{
		{"progress", (&Responder{cfg: Config{AppID: "billing"}}).eventSource(), progressData{State: "running", Progress: 0.5, Message: "halfway"}},
		{"progress", (&Responder{cfg: Config{Queue: "svc.billing queue/eu"}}).eventSource(), progressData{State: "running", Progress: 0}},
		{"request.received", (&Responder{cfg: Config{AppID: "billing"}}).eventSource(), nil},
		{"custom.step", (&Responder{cfg: Config{AppID: "ünïcode app"}}).eventSource(), map[string]any{"step": 3}},
	} {
		b, err := buildEvent(uuid.NewString(), c.typ, c.source, uuid.NewString(), c.data, now)
		require.NoError(t, err, "case %d", i)
		bodies = append(bodies, b)
	}
	input, err := json.Marshal(bodies)
	require.NoError(t, err)
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, node, "check.mjs")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(input)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	require.Equal(t, strings.Repeat("ok\n", len(bodies)), string(out))
}

// cloudEventsChecker returns node's path and the directory of the
// gateway's check.mjs, or skips the test (fails it when CI=true) when they
// are missing.
func cloudEventsChecker(t *testing.T) (node, dir string) {
	t.Helper()
	dir = filepath.Join("..", "gateway", "testdata", "cloudevents")
	missing := func(why string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why + " (with CI=true this test fails instead)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not on PATH: install Node.js 18 or later, then run `make testdeps`")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "cloudevents", "package.json")); err != nil {
		missing("the cloudevents npm package is not installed: run `make testdeps` (npm ci in gateway/testdata/cloudevents)")
	}
	return node, dir
}

// startResponder runs a responder until the test ends.
func startResponder(t *testing.T, cfg Config, h Handler) {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	r, err := New(cfg, h)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		assert.NoError(t, r.Run(ctx))
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-r.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("responder on %s never became ready", cfg.Queue)
	}
}

// A handler still at work after ReceivedAfter has its request announced as
// picked up, once, timed when it started; one that answers sooner sends no
// announcement (its reply says it was picked up).
func TestReceivedAnnouncesSlowHandlersOnly(t *testing.T) {
	t.Parallel()
	url := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)

	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(names.EventsExchange, "topic", true, false, false, false, nil))
	events, err := ch.QueueDeclare("", false, true, true, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(events.Name, TypeReceived+".#", names.EventsExchange, false, nil))
	replies, err := ch.QueueDeclare("", false, true, true, false, nil)
	require.NoError(t, err)

	const after = 200 * time.Millisecond
	started := make(chan time.Time, 2)
	startResponder(t, Config{
		AMQPURL: url, Exchange: names.Exchange, Queue: names.Queue("svc"), Patterns: []string{"job.#"},
		EventsExchange: names.EventsExchange, AppID: "received test", Concurrency: 2, ReceivedAfter: after,
	}, func(ctx context.Context, req Request) (any, error) {
		started <- time.Now()
		if req.RoutingKey == "job.slow" {
			time.Sleep(3 * after)
		}
		return map[string]bool{"ok": true}, nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow, fast := uuid.NewString(), uuid.NewString()
	for key, id := range map[string]string{"job.slow": slow, "job.fast": fast} {
		require.NoError(t, ch.PublishWithContext(ctx, names.Exchange, key, true, false, amqp.Publishing{
			MessageId: id, ReplyTo: replies.Name, ContentType: "application/json", Body: []byte(`{}`),
		}))
	}
	replyDeliveries, err := ch.Consume(replies.Name, "", true, true, false, false, nil)
	require.NoError(t, err)
	for range 2 {
		select {
		case <-replyDeliveries:
		case <-ctx.Done():
			t.Fatal("not every request was answered")
		}
	}
	first, second := <-started, <-started
	earliest := min(first.UnixNano(), second.UnixNano())

	eventDeliveries, err := ch.Consume(events.Name, "", true, true, false, false, nil)
	require.NoError(t, err)
	select {
	case d := <-eventDeliveries:
		require.Equal(t, slow, d.CorrelationId, "only the slow handler's request is announced")
		require.Equal(t, TypeReceived+".job.slow", d.RoutingKey)
		var ev cloudEvent
		require.NoError(t, json.Unmarshal(d.Body, &ev))
		require.Equal(t, TypeReceived, ev.Type)
		require.Equal(t, slow, ev.CorrelationID)
		require.GreaterOrEqual(t, ev.Time.UnixNano(), earliest-int64(time.Millisecond))
		require.Less(t, ev.Time.UnixNano(), earliest+int64(after), "timed when the handler started, not when announced")
	case <-ctx.Done():
		t.Fatal("the slow handler's request was not announced")
	}
	select {
	case d := <-eventDeliveries:
		t.Fatalf("one announcement too many: %s", d.Body)
	case <-time.After(2 * after):
	}
}

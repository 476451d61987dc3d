package rules

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/gateway"
	"github.com/switchboard-gw/switchboard/internal/testresponder"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/responder"
)

// The seed's three rules (examples/rules) end to end, on real RabbitMQ and
// Postgres: a gateway assembled in-process as api's harness does, the real
// engine, and a runner over a copy of the example files rewritten to the
// test's own exchange and directory.

type seedBundle struct {
	amqpURL  string
	names    testsvc.Names
	pool     *pgxpool.Pool
	store    *correlation.Store
	gw       *gateway.Gateway
	engine   *Engine
	runner   *Runner
	firings  *PGFirings
	rulesDir string
	watchDir string
	srv      *httptest.Server // runner.Handler()
}

type seedOptions struct {
	examples []string          // example files to copy
	extra    map[string]string // further rule files; "EVENTS" stands for the events exchange
	engine   EngineConfig
}

func setupSeed(t *testing.T, opts seedOptions) *seedBundle {
	t.Helper()
	b := &seedBundle{amqpURL: testsvc.AMQPURL(t), names: testsvc.BrokerNames(t), rulesDir: t.TempDir(), watchDir: t.TempDir()}
	dbURL := testsvc.Database(t)
	logger := testLogger(t)

	for _, name := range opts.examples {
		raw, err := os.ReadFile(filepath.Join("..", "examples", "rules", name))
		require.NoError(t, err)
		s := strings.ReplaceAll(string(raw), "switchboard.events", b.names.EventsExchange)
		s = strings.ReplaceAll(s, "/var/lib/switchboard/incoming", b.watchDir)
		writeRules(t, b.rulesDir, name, s)
	}
	for name, content := range opts.extra {
		writeRules(t, b.rulesDir, name, strings.ReplaceAll(content, "EVENTS", b.names.EventsExchange))
	}
	for _, q := range []string{"workspace", "loop"} {
		b.names.Queue(q) // the AMQP sources' queues, deleted when the test ends
	}

	ctx, cancel := context.WithCancel(context.Background())
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	b.pool = pool
	b.store = correlation.NewStore(pool, logger)
	gcfg := gateway.DefaultConfig()
	gcfg.AMQPURL = b.amqpURL
	gcfg.RequestExchange = b.names.Exchange
	gcfg.ReplyQueue = b.names.ReplyQueue
	gcfg.EventsExchange = b.names.EventsExchange
	gcfg.DeadLetterExchange = b.names.DeadLetterExchange
	gcfg.DeadLetterQueue = b.names.DeadLetterQueue
	gcfg.EventHistoryQueue = b.names.EventHistoryQueue
	gcfg.SweepInterval = 200 * time.Millisecond
	gcfg.RelayInterval = 200 * time.Millisecond
	gcfg.ReconnectMin = 50 * time.Millisecond
	gcfg.ReconnectMax = 500 * time.Millisecond
	gcfg.ConfirmTimeout = 2 * time.Second
	b.gw, err = gateway.New(gcfg, b.store, gateway.NewMetrics(prometheus.NewRegistry()), logger)
	require.NoError(t, err)

	b.firings = NewPGFirings(pool)
	ecfg := opts.engine
	if ecfg.RetryBase == 0 {
		ecfg.RetryBase, ecfg.RetryMax = 20*time.Millisecond, 100*time.Millisecond
	}
	b.engine = NewEngine(ecfg, Deps{Publisher: b.gw, Submitter: b.gw, Firings: b.firings, DeadLetters: b.store}, logger)
	rcfg := DefaultRunnerConfig(b.rulesDir)
	rcfg.AMQPURL = b.amqpURL
	rcfg.QueuePrefix = b.names.Prefix
	rcfg.DeadLetterExchange = b.names.DeadLetterExchange
	rcfg.Settle = 200 * time.Millisecond
	rcfg.Debounce = 100 * time.Millisecond
	rcfg.RestartMin, rcfg.RestartMax = 50*time.Millisecond, 500*time.Millisecond
	rcfg.Firings = b.firings
	b.runner, err = NewRunner(rcfg, b.engine, logger)
	require.NoError(t, err)
	b.srv = httptest.NewServer(b.runner.Handler())

	listening := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = b.store.Listen(ctx, func() { once.Do(func() { close(listening) }) }) }()
	go func() { defer wg.Done(); _ = b.gw.Run(ctx) }()
	runErr := make(chan error, 1)
	go func() { defer wg.Done(); runErr <- b.runner.Run(ctx) }()
	t.Cleanup(func() {
		b.srv.Close()
		cancel()
		wg.Wait()
		require.NoError(t, <-runErr)
		pool.Close()
	})
	<-listening
	require.Eventually(t, b.gw.Connected, 10*time.Second, 10*time.Millisecond, "gateway never connected to the broker")
	require.Eventually(t, func() bool { return b.runner.Status().Reloads > 0 }, 10*time.Second, 10*time.Millisecond, "rules never loaded")
	for name := range b.engine.Set().Sources {
		b.waitSource(t, name)
	}
	return b
}

// waitSource waits until the source name is ready to take events.
func (b *seedBundle) waitSource(t *testing.T, name string) {
	t.Helper()
	var s Source
	require.Eventually(t, func() bool {
		var ok bool
		s, ok = b.runner.Source(name)
		return ok
	}, 10*time.Second, 10*time.Millisecond, "source %s never started", name)
	switch s := s.(type) {
	case *AMQPConsumer:
		waitReady(t, s.Ready())
	case *DirWatcher:
		waitReady(t, s.Ready())
	case *UDPListener:
		waitReady(t, s.Ready())
	case *HookReceiver:
		require.Eventually(t, func() bool {
			s.mu.RLock()
			defer s.mu.RUnlock()
			return s.h != nil
		}, 10*time.Second, 10*time.Millisecond)
	}
}

// bindEvents declares a queue under the test's prefix bound to the events
// exchange, so the test reads what the rules published.
func (b *seedBundle) bindEvents(t *testing.T, name string, patterns ...string) (*amqp.Channel, string) {
	t.Helper()
	conn, err := amqp.Dial(b.amqpURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(b.names.EventsExchange, "topic", true, false, false, false, nil))
	q := b.names.Queue(name)
	_, err = ch.QueueDeclare(q, true, false, false, false, nil)
	require.NoError(t, err)
	for _, p := range patterns {
		require.NoError(t, ch.QueueBind(q, p, b.names.EventsExchange, false, nil))
	}
	return ch, q
}

func getOne(t *testing.T, ch *amqp.Channel, q string) amqp.Delivery {
	t.Helper()
	var d amqp.Delivery
	require.Eventually(t, func() bool {
		m, ok, err := ch.Get(q, true)
		require.NoError(t, err)
		if ok {
			d = m
		}
		return ok
	}, 10*time.Second, 10*time.Millisecond, "no message on %s", q)
	return d
}

func requireEmpty(t *testing.T, ch *amqp.Channel, q string, wait time.Duration) {
	t.Helper()
	time.Sleep(wait)
	m, ok, err := ch.Get(q, true)
	require.NoError(t, err)
	require.False(t, ok, "unexpected message %s: %s", m.RoutingKey, m.Body)
}

// cloudEvent decodes a published CloudEvent.
type cloudEvent struct {
	SpecVersion string          `json:"specversion"`
	ID          string          `json:"id"`
	Source      string          `json:"source"`
	Type        string          `json:"type"`
	Data        json.RawMessage `json:"data"`
	Hops        int             `json:"switchboardhops"`
}

func decodeCE(t *testing.T, d amqp.Delivery) cloudEvent {
	t.Helper()
	var ce cloudEvent
	require.NoError(t, json.Unmarshal(d.Body, &ce), "body: %s", d.Body)
	require.Equal(t, "1.0", ce.SpecVersion)
	require.Equal(t, ce.ID, d.MessageId)
	return ce
}

// firingsOf returns the recorded firings of rule, newest first.
func (b *seedBundle) firingsOf(t *testing.T, rule string) []Firing {
	t.Helper()
	f, err := b.firings.Recent(context.Background(), rule, 100)
	require.NoError(t, err)
	return f
}

// Seed rule 1, a protocol change: a new file in the watched directory
// yields a new-file event.
func TestSeedNewFile(t *testing.T) {
	t.Parallel()
	b := setupSeed(t, seedOptions{examples: []string{"new-file.yaml"}})
	ch, q := b.bindEvents(t, "out", "new-file")

	path := filepath.Join(b.watchDir, "obs-42.ms")
	require.NoError(t, os.WriteFile(path, []byte("visibilities"), 0o644))

	d := getOne(t, ch, q)
	require.Equal(t, "new-file", d.RoutingKey)
	ce := decodeCE(t, d)
	require.Equal(t, "new-file", ce.Type)
	require.Equal(t, "switchboard/rules/new-file", ce.Source)
	require.Equal(t, 1, ce.Hops)
	require.JSONEq(t, `{"path":"`+path+`","name":"obs-42.ms","size":12}`, string(ce.Data))
	requireEmpty(t, ch, q, 500*time.Millisecond) // file.created matched nothing

	f := b.firingsOf(t, "new-file")
	require.Len(t, f, 1)
	require.Equal(t, OutcomeMatched, f[0].Outcome)
	require.Equal(t, FileFinished, f[0].EventType)
	require.Equal(t, ce.ID, f[0].Actions[0].OutputID)
}

// Seed rule 2, a level change: a workflow-status event with a
// capability_id yields a capability-status event, one without does not;
// and a redelivered source event yields the same output id.
func TestSeedCapabilityStatus(t *testing.T) {
	t.Parallel()
	b := setupSeed(t, seedOptions{examples: []string{"capability-status.yaml"}})
	ch, q := b.bindEvents(t, "out", "capability-status.#")

	publishTo(t, b.amqpURL, b.names.EventsExchange, "workspace.workflow.7", amqp.Publishing{
		MessageId: "wf-7-running", Type: "workflow-status", ContentType: "application/json",
		Body: []byte(`{"workflow_id":7,"capability_id":"cap-3","status":"running"}`)})
	d := getOne(t, ch, q)
	require.Equal(t, "capability-status.cap-3", d.RoutingKey)
	ce := decodeCE(t, d)
	require.Equal(t, "capability-status", ce.Type)
	require.JSONEq(t, `{"capability_id":"cap-3","status":"running"}`, string(ce.Data))
	require.Equal(t, OutputID("amqp://"+b.names.EventsExchange+"/workspace.workflow.7", "wf-7-running", "capability-status", 0).String(), ce.ID)

	// Without capability_id, or of another type: nothing.
	publishTo(t, b.amqpURL, b.names.EventsExchange, "workspace.workflow.8", amqp.Publishing{
		MessageId: "wf-8", Type: "workflow-status", Body: []byte(`{"workflow_id":8,"status":"running"}`)})
	publishTo(t, b.amqpURL, b.names.EventsExchange, "workspace.workflow.9", amqp.Publishing{
		MessageId: "wf-9", Type: "workflow-created", Body: []byte(`{"workflow_id":9,"capability_id":"cap-3"}`)})
	requireEmpty(t, ch, q, time.Second)
	require.Len(t, b.firingsOf(t, "capability-status"), 1, "rules that do not match leave no firing")

	// The same source event again (a redelivery): the same output id, so a
	// consumer that dedupes by id sees it once.
	publishTo(t, b.amqpURL, b.names.EventsExchange, "workspace.workflow.7", amqp.Publishing{
		MessageId: "wf-7-running", Type: "workflow-status", ContentType: "application/json",
		Body: []byte(`{"workflow_id":7,"capability_id":"cap-3","status":"running"}`)})
	again := decodeCE(t, getOne(t, ch, q))
	require.Equal(t, ce.ID, again.ID)
	require.Equal(t, ce, again, "the very same event")

	// An action counts once the broker confirmed it, which may be after
	// the test read the message.
	var rs RuleStatus
	require.Eventually(t, func() bool {
		for _, r := range b.engine.Rules() {
			if r.Name == "capability-status" {
				rs = r
			}
		}
		return rs.ActionsOK == 2
	}, 5*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 2, rs.Matches)
	require.Zero(t, rs.Failures)
}

// Seed rule 3, a semantic change: an ingestion-complete event for the VLA,
// POSTed to the archive webhook source, yields a
// capability.standard-calibration request that a responder answers, with
// the reply on the request's record; for ALMA nothing happens. The
// archive's retry of the same event repeats the same request, idempotently.
func TestSeedStandardCalibration(t *testing.T) {
	t.Parallel()
	b := setupSeed(t, seedOptions{examples: []string{"standard-calibration.yaml"}})
	var calls atomic.Int32
	var got sync.Map
	testresponder.Start(t, responder.Config{AMQPURL: b.amqpURL, Exchange: b.names.Exchange, EventsExchange: b.names.EventsExchange,
		Queue: b.names.Queue("calibration"), Patterns: []string{"capability.standard-calibration"}, Logger: testLogger(t)},
		func(_ context.Context, req responder.Request) (any, error) {
			calls.Add(1)
			got.Store(req.ID, req.Body)
			return map[string]any{"calibrated": true}, nil
		})

	post := func(key, instrument string) {
		t.Helper()
		res := doHTTP(t, b.srv, "POST", "/hooks/archive",
			map[string]string{"Content-Type": "application/json", "Idempotency-Key": key, "Event-Type": "ingestion-complete"},
			`{"instrument":"`+instrument+`","observation":"obs-`+key+`"}`)
		require.Equal(t, 202, res.status, "body: %s", res.body)
	}
	post("ing-1", "VLA")
	id := OutputID("hook:archive", "ing-1", "standard-calibration", 0)
	var req correlation.Request
	var err error
	require.Eventually(t, func() bool {
		req, err = b.store.Get(context.Background(), id)
		return err == nil && req.Status == correlation.StatusReplied
	}, 15*time.Second, 20*time.Millisecond, "the request was never replied (last: %v, %v)", req.Status, err)
	require.Equal(t, "capability.standard-calibration", req.RoutingKey)
	require.JSONEq(t, `{"capability":"standard-calibration","ingestion":{"instrument":"VLA","observation":"obs-ing-1"}}`, string(req.Body))
	require.JSONEq(t, `{"calibrated":true}`, string(req.Reply.Body))
	body, ok := got.Load(id.String())
	require.True(t, ok, "the responder saw the request under the output id")
	require.JSONEq(t, string(req.Body), string(body.(json.RawMessage)))

	// ALMA: no request.
	post("ing-2", "ALMA")
	_, err = b.store.Get(context.Background(), OutputID("hook:archive", "ing-2", "standard-calibration", 0))
	require.ErrorIs(t, err, correlation.ErrNotFound)

	// The archive sends ing-1 again: the same request, not a second one.
	post("ing-1", "VLA")
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), `SELECT count(*) FROM requests`).Scan(&n))
	require.Equal(t, 1, n)
	again, err := b.store.Get(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, correlation.StatusReplied, again.Status)
	time.Sleep(300 * time.Millisecond)
	require.EqualValues(t, 1, calls.Load(), "the calibration ran once")

	f := b.firingsOf(t, "standard-calibration")
	require.Len(t, f, 2, "ALMA did not match")
	for _, fi := range f {
		require.Equal(t, OutcomeMatched, fi.Outcome)
		require.Equal(t, "ing-1", fi.EventID)
		require.Equal(t, id.String(), fi.Actions[0].OutputID)
	}
}

// A rule whose output matches its own source loops; the hop count cuts it
// off at the limit, with a dead letter.
func TestSeedLoopCutOff(t *testing.T) {
	t.Parallel()
	b := setupSeed(t, seedOptions{engine: EngineConfig{MaxHops: 3}, extra: map[string]string{"loop.yaml": `
sources:
  loop: {amqp: {exchange: EVENTS, bindings: ["loop.#"]}}
rules:
  - name: echo
    description: republishes every ping as a ping, to itself
    source: loop
    when: event.type == "ping"
    actions:
      - publish: {exchange: EVENTS, routing_key: '"loop.ping"', type: ping, data: 'event.data'}
`}})
	ch, q := b.bindEvents(t, "out", "loop.#")
	publishTo(t, b.amqpURL, b.names.EventsExchange, "loop.start", amqp.Publishing{MessageId: "p0", Type: "ping", Body: []byte(`{"n":0}`)})

	hops := []int{}
	for range 5 {
		d := getOne(t, ch, q)
		if d.MessageId == "p0" {
			hops = append(hops, 0)
			continue
		}
		hops = append(hops, decodeCE(t, d).Hops)
	}
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, b.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM dead_letters WHERE reason = $1 AND source = 'rules'`, ReasonHopLimit).Scan(&n))
		return n == 1
	}, 10*time.Second, 20*time.Millisecond, "no hop-limit dead letter")
	requireEmpty(t, ch, q, 500*time.Millisecond)
	require.Equal(t, []int{0, 1, 2, 3, 4}, hops, "events with 0..3 hops were acted on, the one with 4 was not")

	// The firing of the 3-hop event is recorded after its output was
	// published, so maybe after the 4-hop event's: count, do not order.
	outcomes := map[string]int{}
	require.Eventually(t, func() bool {
		f := b.firingsOf(t, "echo")
		clear(outcomes)
		for _, fi := range f {
			outcomes[fi.Outcome]++
		}
		return len(f) == 5
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, map[string]int{OutcomeMatched: 4, OutcomeHopLimit: 1}, outcomes)
}

// A reload over AMQP: a good edit changes an AMQP source's bindings
// without losing the queue's events; a bad edit keeps the running set.
func TestSeedReload(t *testing.T) {
	t.Parallel()
	b := setupSeed(t, seedOptions{examples: []string{"capability-status.yaml"}})
	ch, q := b.bindEvents(t, "out", "capability-status.#")
	src := filepath.Join(b.rulesDir, "capability-status.yaml")
	orig, err := os.ReadFile(src)
	require.NoError(t, err)

	writeRules(t, b.rulesDir, "capability-status.yaml", strings.Replace(string(orig), `["workspace.#"]`, `["workspace.#", "workflows.#"]`, 1))
	require.Eventually(t, func() bool {
		return len(b.engine.Set().Sources["workspace"].AMQP.Bindings) == 2
	}, 10*time.Second, 10*time.Millisecond, "good edit never picked up")
	b.waitSource(t, "workspace")
	publishTo(t, b.amqpURL, b.names.EventsExchange, "workflows.1", amqp.Publishing{
		MessageId: "w1", Type: "workflow-status", Body: []byte(`{"capability_id":"cap-9"}`)})
	require.Equal(t, "capability-status.cap-9", getOne(t, ch, q).RoutingKey)

	writeRules(t, b.rulesDir, "capability-status.yaml", string(orig)+"\n  - name: [oops\n")
	require.Eventually(t, func() bool { return b.runner.LastError() != nil }, 10*time.Second, 10*time.Millisecond)
	res := doHTTP(t, b.srv, "GET", "/rules", nil, "")
	require.Equal(t, 200, res.status)
	require.Contains(t, res.json(t)["last_error"], "capability-status.yaml")
	publishTo(t, b.amqpURL, b.names.EventsExchange, "workflows.2", amqp.Publishing{
		MessageId: "w2", Type: "workflow-status", Body: []byte(`{"capability_id":"cap-10"}`)})
	require.Equal(t, "capability-status.cap-10", getOne(t, ch, q).RoutingKey, "the last good set still runs")
}

//go:build faults

package faults

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-gw/switchboard/internal/faultenv"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/responder"
)

// confirmTimeout is every gateway's SWITCHBOARD_CONFIRM_TIMEOUT. The relay
// takes a request another instance committed but never published after
// 2×confirmTimeout + 1s, so a low value keeps the recovery scenarios short.
const confirmTimeout = time.Second

// world is one scenario's private set of services: a throwaway RabbitMQ
// node and Postgres cluster, one database, and broker names of its own.
type world struct {
	t      *testing.T
	name   string
	began  time.Time
	rabbit *faultenv.Rabbit
	pg     *faultenv.Postgres
	dbURL  string
	names  testsvc.Names

	dbOnce sync.Once
	db     *pgxpool.Pool
}

func newWorld(t *testing.T, name string) *world {
	t.Helper()
	w := &world{t: t, name: name, began: time.Now()}
	w.pg = faultenv.StartPostgres(t)
	w.dbURL = w.pg.Database(t)
	w.rabbit = faultenv.StartRabbit(t)
	p := "sbfault." + testsvc.RandomSuffix()
	w.names = testsvc.Names{Exchange: p + ".requests", ReplyQueue: p + ".replies", EventsExchange: p + ".events",
		DeadLetterExchange: p + ".dead-letters", DeadLetterQueue: p + ".dead-letters",
		EventHistoryQueue: p + ".event-history", Prefix: p}
	t.Cleanup(func() {
		if w.db != nil {
			w.db.Close()
		}
		t.Logf("scenario %s took %s", name, time.Since(w.began).Round(100*time.Millisecond))
	})
	return w
}

// queue names a queue of this scenario.
func (w *world) queue(name string) string { return w.names.Prefix + "." + name }

// pool is the test's own connection pool on the scenario database, for the
// invariant checks; it reconnects by itself after a Postgres restart.
func (w *world) pool() *pgxpool.Pool {
	w.dbOnce.Do(func() {
		cfg, err := pgxpool.ParseConfig(w.dbURL)
		if err != nil {
			w.t.Fatalf("parse db url: %v", err)
		}
		cfg.MaxConns = 4
		w.db, err = pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			w.t.Fatalf("open check pool: %v", err)
		}
	})
	return w.db
}

// gatewayEnv is the environment of a `switchboard serve` of this scenario
// that reaches the broker at amqpURL (the node itself, or a proxy).
func (w *world) gatewayEnv(amqpURL string) []string {
	return []string{
		"SWITCHBOARD_DATABASE_URL=" + w.dbURL,
		"SWITCHBOARD_AMQP_URL=" + amqpURL,
		"SWITCHBOARD_REQUEST_EXCHANGE=" + w.names.Exchange,
		"SWITCHBOARD_REPLY_QUEUE=" + w.names.ReplyQueue,
		"SWITCHBOARD_EVENTS_EXCHANGE=" + w.names.EventsExchange,
		"SWITCHBOARD_DEAD_LETTER_EXCHANGE=" + w.names.DeadLetterExchange,
		"SWITCHBOARD_DEAD_LETTER_QUEUE=" + w.names.DeadLetterQueue,
		"SWITCHBOARD_EVENT_HISTORY_QUEUE=" + w.names.EventHistoryQueue,
		"SWITCHBOARD_INSECURE_NO_AUTH=true",
		"SWITCHBOARD_CONFIRM_TIMEOUT=" + confirmTimeout.String(),
		"SWITCHBOARD_SHUTDOWN_TIMEOUT=5s",
		"SWITCHBOARD_MAX_WAIT=10s",
	}
}

// startGateway starts a `switchboard serve` and waits until it is ready:
// connected to the broker with its publisher channel open, and to Postgres.
func (w *world) startGateway(name, amqpURL string) *faultenv.Process {
	w.t.Helper()
	gw := faultenv.StartServe(w.t, switchboardBin, name, w.gatewayEnv(amqpURL))
	gw.WaitLog(w.t, "broker connected", 1, 30*time.Second)
	w.waitReady(gw)
	return gw
}

// waitReady waits until GET /readyz answers 200.
func (w *world) waitReady(gw *faultenv.Process) {
	w.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		last := ""
		res, err := client.Get(gw.URL() + "/readyz")
		if err != nil {
			last = err.Error()
		} else {
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
			last = res.Status
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s not ready after 30s (last answer: %s)", gw.Name, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sendCounter is anything that sends replies and counts them by
// correlation id.
type sendCounter interface {
	Sent() map[string]int
}

// echoResponder is an in-process responder (the responder SDK) that counts
// the replies it made, by correlation id. A count is a handler call, that
// is a reply the SDK then publishes; when the publish is not confirmed the
// SDK requeues the request and the handler runs again, so the count is an
// upper bound on the replies that reached the broker, and at least one of
// them did for every id it holds (or the request is redelivered until one
// does).
type echoResponder struct {
	mu    sync.Mutex
	calls map[string]int
	delay time.Duration
}

// startResponder runs an echo responder on queue for patterns, reaching the
// broker at amqpURL, until the test ends.
func (w *world) startResponder(amqpURL, queue string, delay time.Duration, patterns ...string) *echoResponder {
	w.t.Helper()
	e := &echoResponder{calls: map[string]int{}, delay: delay}
	r, err := responder.New(responder.Config{
		AMQPURL:     amqpURL,
		Exchange:    w.names.Exchange,
		Queue:       queue,
		Patterns:    patterns,
		Prefetch:    16,
		Concurrency: 16,
		AppID:       "sbfault-echo",
		Logger:      w.logger("responder " + queue),
	}, e.handle)
	if err != nil {
		w.t.Fatalf("responder: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	w.t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			w.t.Errorf("responder on %s did not stop", queue)
		}
	})
	select {
	case <-r.Ready():
	case <-time.After(30 * time.Second):
		w.t.Fatalf("responder on %s never became ready", queue)
	}
	return e
}

func (e *echoResponder) handle(ctx context.Context, req responder.Request) (any, error) {
	e.mu.Lock()
	e.calls[req.ID]++
	n := e.calls[req.ID]
	e.mu.Unlock()
	if e.delay > 0 {
		select {
		case <-time.After(e.delay):
		case <-ctx.Done():
		}
	}
	return map[string]any{"echo": req.ID, "attempt": n, "request": req.Body}, nil
}

// Sent returns the replies made, by correlation id.
func (e *echoResponder) Sent() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.calls))
	for k, v := range e.calls {
		out[k] = v
	}
	return out
}

// rawReplier publishes replies with a plain AMQP client, as a responder
// that does not use the SDK would, including replies the SDK would never
// send (bodies that are not JSON, unknown correlation ids). It counts a
// reply once the broker has confirmed it.
type rawReplier struct {
	queue string // the gateway's reply queue

	mu    sync.Mutex
	ch    *amqp.Channel
	sends map[string]int
}

func (w *world) rawReplier(amqpURL string) *rawReplier {
	w.t.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		w.t.Fatalf("raw replier: %v", err)
	}
	w.t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		w.t.Fatalf("raw replier channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		w.t.Fatalf("raw replier confirms: %v", err)
	}
	return &rawReplier{queue: w.names.ReplyQueue, ch: ch, sends: map[string]int{}}
}

// send publishes one reply to the reply queue and waits for its confirm.
func (r *rawReplier) send(corrID string, body []byte, headers amqp.Table) error {
	return r.sendWith(corrID, "", body, headers)
}

// sendWith is send with a given message id (a random one when empty).
func (r *rawReplier) sendWith(corrID, msgID string, body []byte, headers amqp.Table) error {
	if msgID == "" {
		msgID = testsvc.RandomSuffix()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	msg := amqp.Publishing{
		Headers:       headers,
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		CorrelationId: corrID,
		MessageId:     msgID,
		Timestamp:     time.Now(),
		AppId:         "sbfault-raw",
		Body:          body,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := r.ch.PublishWithDeferredConfirmWithContext(ctx, "", r.queue, true, false, msg)
	if err != nil {
		return err
	}
	ok, err := c.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errNacked
	}
	r.sends[corrID]++
	return nil
}

type constErr string

func (e constErr) Error() string { return string(e) }

const errNacked = constErr("reply nacked by the broker")

// Sent returns the confirmed replies, by correlation id.
func (r *rawReplier) Sent() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.sends))
	for k, v := range r.sends {
		out[k] = v
	}
	return out
}

// queueDepth returns how many messages wait, ready, in a queue (-1 when
// it cannot tell: the node may be restarting).
func (w *world) queueDepth(amqpURL, queue string) int {
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return -1
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return -1
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return -1
	}
	return q.Messages
}

// logger returns a logger for an in-process component of the scenario:
// its lines are kept and shown when the test fails (and written to stderr
// at once with SWITCHBOARD_FAULTS_LOG=1).
func (w *world) logger(name string) *slog.Logger {
	buf := &lockedBuffer{}
	var out io.Writer = buf
	if os.Getenv("SWITCHBOARD_FAULTS_LOG") != "" {
		out = io.MultiWriter(buf, os.Stderr)
	}
	w.t.Cleanup(func() {
		if w.t.Failed() {
			w.t.Logf("%s log:\n%s", name, buf.tail(4000))
		}
	})
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// sleep pauses a scenario between the steps of its faults.
func sleep(d time.Duration) { time.Sleep(d) }

// step logs a scenario's progress with the time since it began.
func (w *world) step(format string, args ...any) {
	w.t.Helper()
	w.t.Logf("+%5.1fs "+format, append([]any{time.Since(w.began).Seconds()}, args...)...)
}

// joinLines indents lines for a failure message.
func joinLines(lines []string, max int) string {
	if len(lines) > max {
		lines = append(lines[:max:max], "...")
	}
	return "  " + strings.Join(lines, "\n  ")
}

// poisonResponder answers every request on queue (bound to pattern) through
// raw, with replies that must fail their request: odd ones carry a body
// that is not JSON, even ones header status=error; every third one is
// answered twice, identically (a duplicate, to be absorbed).
func (w *world) poisonResponder(amqpURL string, raw *rawReplier, queue, pattern string) {
	w.t.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		w.t.Fatalf("poison responder: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		w.t.Fatalf("poison responder: %v", err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		w.t.Fatalf("poison responder: %v", err)
	}
	if err := ch.QueueBind(queue, pattern, w.names.Exchange, false, nil); err != nil {
		w.t.Fatalf("poison responder: %v", err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		w.t.Fatalf("poison responder: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n := 0
		for d := range deliveries {
			n++
			body, headers := []byte("<html>this is not JSON: "+d.MessageId+"</html>"), amqp.Table(nil)
			if n%2 == 0 {
				body, headers = []byte(`{"error": "the responder failed"}`), amqp.Table{"status": "error"}
			}
			err := raw.send(d.MessageId, body, headers)
			if err == nil && n%3 == 0 {
				// The same reply again: replies are stored concurrently, in
				// no set order, so only an identical one keeps the outcome
				// certain.
				err = raw.send(d.MessageId, body, headers)
			}
			if err != nil {
				w.t.Errorf("poison responder: reply to %s: %v", d.MessageId, err)
			}
			_ = d.Ack(false)
		}
	}()
	w.t.Cleanup(func() {
		_ = conn.Close()
		<-done
	})
}

// deadLetterReasons counts the dead_letters rows by reason.
func (w *world) deadLetterReasons() map[string]int {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := w.pool().Query(ctx, `SELECT reason, count(*) FROM dead_letters GROUP BY 1`)
	if err != nil {
		w.t.Fatalf("dead letter reasons: %v", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var reason string
		var n int
		if err := rows.Scan(&reason, &n); err != nil {
			w.t.Fatalf("dead letter reasons: %v", err)
		}
		out[reason] = n
	}
	return out
}

// silentQueue declares queue bound to pattern and never
// consumes it: requests routed there wait until they expire.
func (w *world) silentQueue(queue, pattern string) {
	w.t.Helper()
	conn, err := amqp.Dial(w.rabbit.URL())
	if err != nil {
		w.t.Fatalf("silent queue: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		w.t.Fatalf("silent queue: %v", err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		w.t.Fatalf("silent queue: %v", err)
	}
	if err := ch.QueueBind(queue, pattern, w.names.Exchange, false, nil); err != nil {
		w.t.Fatalf("silent queue: %v", err)
	}
}

// startLoad starts the scenario's clients.
func (w *world) startLoad(cfg loadConfig) *load {
	w.t.Helper()
	w.step("services up; %d clients start", cfg.clients)
	return startLoad(cfg)
}

// Package webhook delivers the outcome of a request to the URL the client
// gave in Reply-To (CONTRACT §4): signed per the Standard Webhooks spec,
// retried on a schedule that survives gateway restarts, and never sent to a
// private, loopback or link-local address unless the operator allows it.
//
// A delivery is a row of webhook_deliveries. A trigger on requests creates
// it in the transaction that ends the request, so it exists exactly when the
// outcome it announces has committed, whichever path and instance ended it.
// Dispatchers on every instance claim due deliveries with FOR UPDATE SKIP
// LOCKED and lease them for the length of an attempt; an attempt's outcome
// is recorded only under its lease, with the attempt row, in one
// transaction. An instance that dies mid-attempt leaves a lease that runs
// out, and another instance attempts the delivery again: delivery is at
// least once, and the webhook-id (the request id) is the receiver's
// idempotency key.
//
// The payload is the request record (CONTRACT §2) in the Standard Webhooks
// envelope, {"type": "request.<status>", "timestamp": ..., "data": record},
// the same bytes on every attempt.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/webhook/signature"
)

// notifyChannel is where the enqueue trigger announces new deliveries.
const notifyChannel = "switchboard_webhooks"

// Config holds the dispatcher's settings.
type Config struct {
	// Secrets sign every delivery; all of them during a rotation, so a
	// receiver holding either the old or the new secret can verify.
	Secrets []signature.Secret
	// Schedule is the delay before each attempt of a round; its length is
	// how many attempts are made before giving up.
	Schedule []time.Duration
	// Jitter spreads each scheduled delay by up to ± this fraction.
	Jitter float64
	// Timeout bounds one attempt, from dial to the end of the response.
	Timeout time.Duration
	// Workers is how many attempts run at once on this instance.
	Workers int
	// PollInterval is how often due deliveries are looked for when nothing
	// announced any: retries scheduled by other instances, and deliveries
	// whose notification was missed while the listener reconnected.
	PollInterval time.Duration
	// UserAgent is sent with every attempt.
	UserAgent string
}

// DefaultConfig returns the documented defaults, without secrets.
func DefaultConfig() Config {
	return Config{
		Schedule:     DefaultSchedule,
		Jitter:       0.2,
		Timeout:      15 * time.Second,
		Workers:      16,
		PollInterval: time.Second,
		UserAgent:    "switchboard-webhooks/1",
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case len(c.Secrets) == 0:
		return errors.New("webhooks need at least one signing secret")
	case len(c.Schedule) == 0:
		return errors.New("the webhook schedule needs at least one attempt")
	case c.Jitter < 0 || c.Jitter >= 1:
		return errors.New("webhook jitter must be in [0, 1)")
	case c.Timeout <= 0:
		return errors.New("webhook timeout must be positive")
	case c.Workers < 1:
		return errors.New("webhook workers must be at least 1")
	case c.PollInterval <= 0:
		return errors.New("webhook poll interval must be positive")
	}
	return nil
}

// defaultLeaseMargin is how much longer than an attempt's timeout a lease
// lasts: the time to record the outcome.
const defaultLeaseMargin = 30 * time.Second

// Response bodies: what is read before the connection is given up, and
// what is kept with the attempt.
const (
	maxResponseRead = 64 << 10
	maxResponseKept = 1 << 10
)

// Records reads request records.
type Records interface {
	Get(ctx context.Context, id uuid.UUID) (correlation.Request, error)
}

// Receipts is told when a reply reached its receiver, so it can announce
// reply.delivered once per request.
type Receipts interface {
	ReplyDelivered(ctx context.Context, id uuid.UUID, via string) error
}

// Dispatcher attempts due deliveries.
type Dispatcher struct {
	cfg      Config
	store    *Store
	pool     *pgxpool.Pool
	records  Records
	receipts Receipts
	client   *http.Client
	metrics  *Metrics
	logger   *slog.Logger
	tracer   trace.Tracer // nil: spans are not recorded
	now      func() time.Time
	// leaseMargin: see defaultLeaseMargin; tests shorten it to play an
	// instance that died mid-attempt.
	leaseMargin time.Duration

	nudge chan struct{} // a delivery may be due now
	slots chan struct{} // one per worker
	wg    sync.WaitGroup

	mu    sync.Mutex
	timer *time.Timer // armed for the soonest retry this instance scheduled
	timed time.Time
}

// NewDispatcher returns a dispatcher that sends with client (see NewClient:
// the SSRF guard lives there). receipts may be nil.
func NewDispatcher(cfg Config, pool *pgxpool.Pool, records Records, receipts Receipts, client *http.Client,
	metrics *Metrics, logger *slog.Logger) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webhook config: %w", err)
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	return &Dispatcher{
		cfg: cfg, store: NewStore(pool), pool: pool, records: records, receipts: receipts, client: client,
		metrics: metrics, logger: logger, now: time.Now, leaseMargin: defaultLeaseMargin,
		nudge: make(chan struct{}, 1), slots: make(chan struct{}, cfg.Workers),
	}, nil
}

// Store returns the delivery store the dispatcher works on.
func (d *Dispatcher) Store() *Store { return d.store }

// Nudge makes the dispatcher look for due deliveries now, e.g. after a
// manual retry.
func (d *Dispatcher) Nudge() {
	select {
	case d.nudge <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends, then waits for the attempts in flight (each
// bounded by the attempt timeout) and returns.
func (d *Dispatcher) Run(ctx context.Context) error {
	listenCtx, stopListen := context.WithCancel(ctx)
	var listener sync.WaitGroup
	listener.Add(1)
	go func() { defer listener.Done(); d.listen(listenCtx) }()
	defer func() {
		stopListen()
		listener.Wait()
		d.wg.Wait()
		d.mu.Lock()
		if d.timer != nil {
			d.timer.Stop()
		}
		d.mu.Unlock()
	}()

	poll := time.NewTicker(d.cfg.PollInterval)
	defer poll.Stop()
	backoff := d.cfg.PollInterval
	for {
		n, err := d.dispatchOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			d.logger.Warn("webhook dispatcher: claiming due deliveries", "error", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		case n > 0:
			backoff = d.cfg.PollInterval
			continue // there may be more due
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.nudge:
		case <-poll.C:
		}
	}
}

// dispatchOnce waits for a free worker, claims as many due deliveries as
// there are free workers, and starts an attempt for each.
func (d *Dispatcher) dispatchOnce(ctx context.Context) (int, error) {
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, nil
	}
	free := 1
	for free < cap(d.slots) {
		select {
		case d.slots <- struct{}{}:
			free++
			continue
		default:
		}
		break
	}
	due, lease, err := d.store.claim(ctx, free, d.cfg.Timeout+d.leaseMargin)
	for range free - len(due) {
		<-d.slots
	}
	if err != nil {
		return 0, err
	}
	for _, del := range due {
		d.wg.Add(1)
		go func() {
			defer func() { <-d.slots; d.wg.Done() }()
			// The attempt finishes even when the gateway is stopping: its
			// timeout bounds it, and its outcome must be recorded.
			d.attempt(context.WithoutCancel(ctx), del, lease)
		}()
	}
	return len(due), nil
}

// envelope is the Standard Webhooks payload shape.
type envelope struct {
	Type      string             `json:"type"`
	Timestamp time.Time          `json:"timestamp"`
	Data      correlation.Record `json:"data"`
}

// payload renders what is delivered for del: the same bytes every time.
func payload(del Delivery, rec correlation.Request) ([]byte, error) {
	return json.Marshal(envelope{Type: del.EventType, Timestamp: del.EventAt.UTC(), Data: rec.Record()})
}

// attempt makes one attempt at del and records its outcome.
func (d *Dispatcher) attempt(ctx context.Context, del Delivery, lease uuid.UUID) {
	log := d.logger.With("request_id", del.RequestID.String(), "attempt", del.Attempts+1)
	rec, err := d.records.Get(ctx, del.RequestID)
	if err != nil {
		// The lease runs out and the delivery is tried again then.
		log.Warn("webhook: read the request to deliver", "error", err)
		d.metrics.Errors.Inc()
		return
	}
	body, err := payload(del, rec)
	if err != nil {
		log.Error("webhook: render payload", "error", err)
		d.metrics.Errors.Inc()
		return
	}

	ctx, span := d.startAttemptSpan(ctx, del, rec) // the log lines below carry its trace id
	res := d.send(ctx, del, body)
	endAttemptSpan(span, res)
	d.metrics.Attempts.WithLabelValues(res.attempt.Outcome).Inc()
	d.metrics.AttemptSeconds.Observe(res.attempt.Duration.Seconds())

	if res.state == StateDelivered && d.receipts != nil && rec.Reply != nil {
		// Before the delivery is recorded: if recording fails the delivery
		// is attempted again, and the receipt is idempotent.
		if err := d.receipts.ReplyDelivered(ctx, del.RequestID, "webhook"); err != nil {
			log.WarnContext(ctx, "webhook: record the reply receipt", "error", err)
		}
	}
	err = d.store.record(ctx, del, lease, res, body)
	switch {
	case errors.Is(err, errLeaseLost):
		d.metrics.LeasesLost.Inc()
		log.WarnContext(ctx, "webhook: attempt outlived its lease; its outcome is not recorded", "outcome", res.attempt.Outcome)
		return
	case err != nil:
		d.metrics.Errors.Inc()
		log.WarnContext(ctx, "webhook: record the attempt; the delivery is tried again when its lease runs out", "error", err)
		return
	}
	switch res.state {
	case StateDelivered:
		log.DebugContext(ctx, "webhook delivered", "status", *res.attempt.HTTPStatus)
	case StateFailed:
		d.metrics.GaveUp.WithLabelValues(res.deadCause).Inc()
		log.WarnContext(ctx, "webhook delivery gave up", "cause", res.deadCause, "error", res.attempt.Error)
	default:
		d.armTimer(res.nextAt)
		log.InfoContext(ctx, "webhook attempt failed; will retry", "error", res.attempt.Error, "next_attempt_at", res.nextAt)
	}
}

// send POSTs the payload once and decides what follows.
func (d *Dispatcher) send(ctx context.Context, del Delivery, body []byte) result {
	start := d.now()
	a := Attempt{Attempt: del.Attempts + 1, URL: del.URL, StartedAt: start}
	status, retryAfter, respBody, err := d.post(ctx, del, body, start)
	a.Duration = d.now().Sub(start)
	a.ResponseBody = truncateText(respBody, maxResponseKept)
	if status != 0 {
		a.HTTPStatus = &status
	}

	var blocked *BlockedError
	switch {
	case err == nil && status >= 200 && status < 300:
		a.Outcome = OutcomeDelivered
		return result{attempt: a, state: StateDelivered}
	case errors.As(err, &blocked):
		a.Error, a.Outcome = err.Error(), OutcomeFailed
		return result{attempt: a, state: StateFailed, deadCause: "blocked"}
	case err == nil && status == http.StatusGone:
		a.Error, a.Outcome = "the receiver answered 410 Gone: no more attempts", OutcomeFailed
		return result{attempt: a, state: StateFailed, deadCause: "gone"}
	case err != nil && errors.Is(err, context.DeadlineExceeded):
		a.Error = fmt.Sprintf("no complete answer within %s (the attempt timeout): %v", d.cfg.Timeout, err)
	case err != nil:
		a.Error = err.Error()
	case status >= 300 && status < 400:
		a.Error = fmt.Sprintf("the receiver answered %d: redirects are not followed", status)
	default:
		a.Error = fmt.Sprintf("the receiver answered %d", status)
	}
	if status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable {
		retryAfter = 0
	}
	wait, ok := nextDelay(d.cfg.Schedule, a.Attempt-del.RoundStart, d.cfg.Jitter, retryAfter)
	if !ok {
		a.Outcome = OutcomeFailed
		return result{attempt: a, state: StateFailed, deadCause: "exhausted"}
	}
	a.Outcome = OutcomeRetry
	return result{attempt: a, state: StatePending, nextAt: d.now().Add(wait)}
}

// post sends one signed attempt. It returns the status (0 when there was
// no response), the Retry-After delay asked for, and the start of the body.
func (d *Dispatcher) post(ctx context.Context, del Delivery, body []byte, now time.Time) (int, time.Duration, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, del.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range signature.Headers(del.RequestID.String(), now, body, d.cfg.Secrets...) {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.cfg.UserAgent)
	traceContext.Inject(ctx, propagation.HeaderCarrier(req.Header)) // the attempt's span
	res, err := d.client.Do(req)
	if err != nil {
		return 0, 0, nil, err
	}
	defer res.Body.Close()
	kept, _ := io.ReadAll(io.LimitReader(res.Body, maxResponseKept))
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxResponseRead))
	return res.StatusCode, parseRetryAfter(res.Header.Get("Retry-After"), d.now()), kept, nil
}

// armTimer makes sure this instance looks for due deliveries at at, so a
// retry it scheduled is not late by a poll interval.
func (d *Dispatcher) armTimer(at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timed.IsZero() && !at.Before(d.timed) && d.timed.After(d.now()) {
		return // an earlier wake-up is armed
	}
	if d.timer != nil {
		d.timer.Stop()
	}
	d.timed = at
	d.timer = time.AfterFunc(max(at.Sub(d.now()), 0), d.Nudge)
}

// listen turns the enqueue trigger's notifications into nudges, holding a
// connection of its own and reconnecting with backoff.
func (d *Dispatcher) listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := d.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		d.logger.Warn("webhook listener lost its connection; reconnecting", "error", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (d *Dispatcher) listenOnce(ctx context.Context) error {
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection had LISTEN state: close it rather than return it.
	defer func() { _ = conn.Conn().Close(context.Background()); conn.Release() }()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	d.Nudge() // anything enqueued before LISTEN took effect
	for {
		if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
			return err
		}
		d.Nudge()
	}
}

// Metrics are the dispatcher's Prometheus instruments.
type Metrics struct {
	Attempts       *prometheus.CounterVec
	AttemptSeconds prometheus.Histogram
	GaveUp         *prometheus.CounterVec
	LeasesLost     prometheus.Counter
	Errors         prometheus.Counter
}

// NewMetrics creates the instruments and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_webhook_attempts_total", Help: "Webhook delivery attempts, by outcome (delivered, retry, failed)."},
			[]string{"outcome"}),
		AttemptSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "switchboard_webhook_attempt_seconds", Help: "Duration of webhook delivery attempts.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 13)}),
		GaveUp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_webhook_deliveries_failed_total",
			Help: "Webhook deliveries given up, by cause (exhausted, gone, blocked); each leaves a dead letter."},
			[]string{"cause"}),
		LeasesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_webhook_leases_lost_total", Help: "Attempts whose outcome came after their lease ran out (not recorded; the delivery is attempted again)."}),
		Errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_webhook_errors_total", Help: "Attempts that could not be made or recorded because of a database error (retried when the lease runs out)."}),
	}
	if reg != nil {
		reg.MustRegister(m.Attempts, m.AttemptSeconds, m.GaveUp, m.LeasesLost, m.Errors)
	}
	return m
}

// Package gateway is switchboard's messaging side: it stamps requests and
// publishes them to RabbitMQ with publisher confirms (requests and events
// on confirm channels of their own), relays the Postgres
// outbox when the broker was away, consumes replies into the correlation
// store, expires overdue requests, and keeps the broker connection (and every
// channel on it) alive across broker restarts.
//
// The ordering rules that make it reliable:
//   - a request is committed (status queued) before it is published;
//   - it becomes pending only after the broker confirms it, and unroutable
//     when the broker returns it (mandatory flag);
//   - a request that could not be published stays queued and the outbox
//     relay publishes it later: at least once, never silently dropped;
//   - a reply is acked only after the correlation store has committed it
//     (or kept it as a dead letter).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-gw/switchboard/correlation"
)

// Config configures the messaging gateway.
type Config struct {
	// AMQPURL is the broker to use.
	AMQPURL string
	// RequestExchange is the durable topic exchange requests are published to.
	RequestExchange string
	// ReplyQueue is the durable quorum queue responders reply to (the
	// reply_to of every request). Every gateway instance consumes it: any
	// instance can store any reply, because matching happens in Postgres.
	ReplyQueue string
	// ReplyDeliveryLimit is how often a reply may be delivered before the
	// broker dead-letters it, so a message that crashes its consumer cannot
	// loop forever (RabbitMQ 3.10 sets no limit by default).
	ReplyDeliveryLimit int
	// MaxReplyBytes is the largest reply body stored; a larger one fails
	// its request with an explanation instead of filling Postgres.
	MaxReplyBytes int
	// EventsExchange is the durable topic exchange for lifecycle events
	// (request.cancelled.<routing key>, ...).
	EventsExchange string
	// EventHistoryQueue is the durable quorum queue, shared by every
	// instance and bound to # on EventsExchange, whose events are stored in
	// the history of the request they name.
	EventHistoryQueue string
	// DeadLetterExchange and DeadLetterQueue receive replies the broker gave
	// up on (rejected as unprocessable, or over the delivery limit); the
	// gateway records each in the dead_letters table.
	DeadLetterExchange, DeadLetterQueue string
	// DeadLetterQueueType is "classic" (the default) or "quorum", which a
	// RabbitMQ cluster replicates. The reply and event history queues are
	// always quorum queues.
	DeadLetterQueueType string
	// AppID is sent as the app_id property.
	AppID string
	// Prefetch bounds unacked replies held by this instance.
	Prefetch int
	// ReplyWorkers is how many replies are stored concurrently. Replies
	// stored concurrently share group commits, so this is what lets reply
	// throughput grow with load; more workers than Prefetch sit idle.
	ReplyWorkers int
	// ConfirmTimeout bounds the wait for a broker confirm; a request not
	// confirmed by then stays queued for the relay.
	ConfirmTimeout time.Duration
	// RelayInterval is how often the outbox relay looks for due requests
	// when nothing woke it.
	RelayInterval time.Duration
	// RelayBatch is how many requests the relay claims at once.
	RelayBatch int
	// SweepInterval is how often overdue requests are expired.
	SweepInterval time.Duration
	// StallAfter flags a published request that no responder has picked
	// up (no request.received event) within it; 0 turns flagging off.
	StallAfter time.Duration
	// ReplyReceipts records the first delivery of each reply (a webhook
	// receiver's 2xx, or the first read that returned it) and publishes
	// reply.delivered for it. Off, the gateway neither records nor
	// announces deliveries, and a round trip costs one event less.
	ReplyReceipts bool
	// Retention is how long terminal requests and dead letters are kept.
	Retention time.Duration
	// PurgeInterval is how often expired-retention rows are removed, in
	// batches of PurgeBatch.
	PurgeInterval time.Duration
	PurgeBatch    int
	// ReconnectMin and ReconnectMax bound the broker reconnect backoff.
	ReconnectMin, ReconnectMax time.Duration
}

// DefaultConfig returns a configuration for RabbitMQ on its standard local port.
func DefaultConfig() Config {
	return Config{
		AMQPURL:             "amqp://guest:guest@127.0.0.1:5672/",
		RequestExchange:     "switchboard.requests",
		ReplyQueue:          "switchboard.replies",
		ReplyDeliveryLimit:  20,
		MaxReplyBytes:       8 << 20,
		EventsExchange:      "switchboard.events",
		EventHistoryQueue:   "switchboard.event-history",
		DeadLetterExchange:  "switchboard.dead-letters",
		DeadLetterQueue:     "switchboard.dead-letters",
		DeadLetterQueueType: "classic",
		AppID:               "switchboard",
		Prefetch:            256,
		ReplyWorkers:        256,
		ConfirmTimeout:      5 * time.Second,
		RelayInterval:       2 * time.Second,
		RelayBatch:          100,
		SweepInterval:       time.Second,
		StallAfter:          time.Minute,
		ReplyReceipts:       true,
		Retention:           7 * 24 * time.Hour,
		PurgeInterval:       time.Minute,
		PurgeBatch:          1000,
		ReconnectMin:        100 * time.Millisecond,
		ReconnectMax:        10 * time.Second,
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.AMQPURL == "":
		return errors.New("amqp url is empty")
	case c.RequestExchange == "":
		return errors.New("request exchange is empty")
	case c.ReplyQueue == "":
		return errors.New("reply queue is empty")
	case c.EventsExchange == "" || c.EventHistoryQueue == "" || c.DeadLetterExchange == "" || c.DeadLetterQueue == "":
		return errors.New("events exchange and history queue, and dead-letter exchange and queue, must be named")
	case c.DeadLetterQueueType != "" && c.DeadLetterQueueType != "classic" && c.DeadLetterQueueType != "quorum":
		return fmt.Errorf("dead-letter queue type %q: want classic or quorum", c.DeadLetterQueueType)
	case c.ReplyDeliveryLimit < 1:
		return errors.New("reply delivery limit must be at least 1")
	case c.MaxReplyBytes < 1:
		return errors.New("max reply bytes must be positive")
	case c.Retention < time.Minute || c.PurgeInterval <= 0 || c.PurgeBatch < 1:
		return errors.New("retention must be at least a minute, with a positive purge interval and batch")
	case c.Prefetch < 1:
		return errors.New("prefetch must be at least 1")
	case c.ReplyWorkers < 1:
		return errors.New("reply workers must be at least 1")
	case c.ConfirmTimeout <= 0:
		return errors.New("confirm timeout must be positive")
	case c.StallAfter < 0:
		return errors.New("stall time must be 0 (off) or more")
	case c.RelayInterval <= 0 || c.SweepInterval <= 0:
		return errors.New("relay and sweep intervals must be positive")
	case c.RelayBatch < 1:
		return errors.New("relay batch must be at least 1")
	case c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin:
		return errors.New("reconnect backoff bounds are invalid")
	}
	return nil
}

// Gateway ties the broker side together. Create it with New, run it with
// Run, and submit requests with Submit.
type Gateway struct {
	cfg       Config
	store     *correlation.Store
	logger    *slog.Logger
	metrics   *Metrics
	conn      *Connection
	publisher *Publisher
	// events publishes events (the outbox relay's, rule actions') on a
	// confirm channel of its own, so a request's confirm never waits
	// behind an event's: amqp091-go hands confirms over in publish order,
	// and events go to quorum queues, whose confirms come later.
	events    *Publisher
	replies   *replyConsumer
	dead      *deadLetterConsumer
	relayWake chan struct{}
	// eventsWake wakes the event relay (runEventRelay).
	eventsWake chan struct{}
	receipts   chan uuid.UUID
	// sinks take consumed events; liveActivity carries the number of topic
	// subscribers as it changes.
	sinks        EventSinks
	liveActivity chan int
	// tracer traces publishes (see SetTracerProvider).
	tracer trace.Tracer
}

// New builds a gateway; nothing connects until Run.
func New(cfg Config, store *correlation.Store, metrics *Metrics, logger *slog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gateway config: %w", err)
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	g := &Gateway{cfg: cfg, store: store, logger: logger, metrics: metrics, relayWake: make(chan struct{}, 1), eventsWake: make(chan struct{}, 1),
		receipts: make(chan uuid.UUID, receiptQueue), liveActivity: make(chan int, 1)}
	g.publisher = newPublisher(cfg.ConfirmTimeout, metrics, logger)
	g.events = newPublisher(cfg.ConfirmTimeout, metrics, logger)
	g.tracer = defaultTracer()
	g.replies = &replyConsumer{cfg: cfg, store: g.StoreReply, logger: logger, tracer: g.tracer}
	g.dead = &deadLetterConsumer{cfg: cfg, store: store, metrics: metrics, logger: logger}
	g.conn = NewConnection(cfg.AMQPURL, cfg.ReconnectMin, cfg.ReconnectMax, metrics, logger,
		g.declareTopology, g.publisher.serve, g.events.serve, g.replies.serve, g.dead.serve, g.serveHistory, g.serveLive)
	g.publisher.onReady = g.wakeRelay
	g.events.onReady = g.wakeEvents
	return g, nil
}

// declareTopology declares what the gateway needs on every (re)connect:
// declarations are idempotent, and the broker may have lost them.
func (g *Gateway) declareTopology(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open topology channel: %w", err)
	}
	defer ch.Close()
	for _, ex := range []struct{ name, kind string }{
		{g.cfg.RequestExchange, "topic"},
		{g.cfg.EventsExchange, "topic"},
		{g.cfg.DeadLetterExchange, "fanout"},
	} {
		if err := ch.ExchangeDeclare(ex.name, ex.kind, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", ex.name, err)
		}
	}
	var dlqArgs amqp.Table // classic: no arguments, as queues declared before the option
	if g.cfg.DeadLetterQueueType == "quorum" {
		dlqArgs = amqp.Table{"x-queue-type": "quorum"}
	}
	if _, err := ch.QueueDeclare(g.cfg.DeadLetterQueue, true, false, false, false, dlqArgs); err != nil {
		return fmt.Errorf("declare queue %s (a queue of that name of another type must be deleted first): %w", g.cfg.DeadLetterQueue, err)
	}
	if err := ch.QueueBind(g.cfg.DeadLetterQueue, "", g.cfg.DeadLetterExchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", g.cfg.DeadLetterQueue, err)
	}
	// A quorum queue: replicated where there is a cluster, and the queue
	// type that enforces a delivery limit.
	if _, err := ch.QueueDeclare(g.cfg.ReplyQueue, true, false, false, false, amqp.Table{
		"x-queue-type":           "quorum",
		"x-delivery-limit":       int64(g.cfg.ReplyDeliveryLimit),
		"x-dead-letter-exchange": g.cfg.DeadLetterExchange,
	}); err != nil {
		return fmt.Errorf("declare queue %s (a queue of that name with other arguments must be deleted first): %w", g.cfg.ReplyQueue, err)
	}
	if g.sinks.History != nil {
		return g.declareEventHistory(ch)
	}
	return nil
}

// Run connects to the broker and runs the publisher, the reply consumer, the
// outbox relay, the expiry sweeper and the receipt recorder until ctx ends. On return every
// in-flight reply has been acked or released back to the queue.
func (g *Gateway) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); g.conn.Run(ctx) }()
	go func() { defer wg.Done(); g.runEventRelay(ctx) }()
	go func() { defer wg.Done(); g.runReceipts(ctx) }()
	go func() { defer wg.Done(); g.runRelay(ctx) }()
	go func() { defer wg.Done(); g.runSweeper(ctx) }()
	wg.Wait()
	return nil
}

// Connected reports whether the broker connection is up (for /readyz).
func (g *Gateway) Connected() bool { return g.conn.Connected() && g.publisher.ready() }

// ErrBrokerDown is returned by Ready while the broker cannot be reached.
var ErrBrokerDown = errors.New("broker not connected")

// Ready returns nil when the gateway can publish right now.
func (g *Gateway) Ready(context.Context) error {
	if !g.Connected() {
		return ErrBrokerDown
	}
	return nil
}

// Submit records a request, publishes it and waits for the broker's verdict.
// It returns the record with status pending (confirmed), unroutable
// (returned by the broker) or queued (the broker could not take it now: the
// relay will publish it). A repeat of an existing request (same id, routing
// key and body) returns the existing record without publishing again.
func (g *Gateway) Submit(ctx context.Context, n correlation.NewRequest) (correlation.Request, bool, error) {
	// The relay leaves the row alone until the submitter has had its chance
	// to publish and record the confirm.
	n.PublishAfter = time.Now().Add(2*g.cfg.ConfirmTimeout + time.Second)
	n.TraceParent, n.TraceState = submitTrace(ctx)
	r, created, err := g.store.Create(ctx, n)
	if err != nil || !created {
		return r, created, err
	}
	g.metrics.RequestsAccepted.Inc()
	g.wakeEvents() // request.accepted

	// From here the request is committed: finish recording the publish
	// outcome even if the client goes away, or the relay would publish it a
	// second time.
	ctx = context.WithoutCancel(ctx)
	err = g.publishRequest(ctx, r, time.Now())
	switch {
	case err == nil:
		if err := g.store.MarkPublished(ctx, r.ID); err != nil {
			// The broker has it; only our bookkeeping lags. The relay will
			// publish it once more later and the duplicate reply is absorbed.
			g.logger.ErrorContext(ctx, "record publish confirm", "request_id", r.ID, "error", err)
			return r, true, nil
		}
		r.Status = correlation.StatusPending
	case errors.Is(err, ErrUnroutable):
		if err := g.store.MarkUnroutable(ctx, r.ID); err != nil {
			return r, true, err
		}
		r.Status = correlation.StatusUnroutable
	default:
		g.logger.WarnContext(ctx, "publish failed; request left in the outbox", "request_id", r.ID, "error", err)
		if err := g.store.RetryLater(ctx, r.ID, err); err != nil {
			g.logger.ErrorContext(ctx, "schedule republish", "request_id", r.ID, "error", err)
		}
		g.wakeRelay()
	}
	return r, true, nil
}

// StoreReply matches a reply (from the reply queue or from POST
// /v1/replies) to its request, and counts the outcome. Replies that match no
// open request are kept as dead letters by the store and counted here.
func (g *Gateway) StoreReply(ctx context.Context, in correlation.IncomingReply) (correlation.Outcome, error) {
	outcome, rec, err := g.store.StoreReplyRecord(ctx, in)
	if err != nil {
		g.metrics.Replies.WithLabelValues(in.Source, "error").Inc()
		return outcome, err
	}
	g.metrics.Replies.WithLabelValues(in.Source, string(outcome)).Inc()
	if outcome == correlation.OutcomeStored {
		g.metrics.ReplyLatency.Observe(replyLatency(rec).Seconds())
		linkToRequest(ctx, *rec)
		g.wakeEvents() // request.replied or request.failed
	}
	switch outcome {
	case correlation.OutcomeStored, correlation.OutcomeDuplicate:
		g.logger.DebugContext(ctx, "reply", "request_id", in.CorrelationID, "outcome", outcome, "source", in.Source)
	default:
		g.metrics.DeadLetters.WithLabelValues(string(outcome)).Inc()
		g.logger.WarnContext(ctx, "reply kept as dead letter", "request_id", in.CorrelationID, "reason", outcome, "source", in.Source)
	}
	return outcome, nil
}

// replyLatency is how long rec waited for its reply: from its publish, or
// from its creation when the reply was stored before the confirm was. All
// three times are the database's, so instances' clocks do not matter.
func replyLatency(rec *correlation.Request) time.Duration {
	if rec == nil || rec.Reply == nil {
		return 0
	}
	from := rec.CreatedAt
	if rec.PublishedAt != nil {
		from = *rec.PublishedAt
	}
	return max(rec.Reply.ReceivedAt.Sub(from), 0)
}

// flagStalled flags the requests nobody has picked up within StallAfter.
func (g *Gateway) flagStalled(ctx context.Context) {
	n, err := g.store.FlagStalled(ctx, g.cfg.StallAfter)
	if err != nil {
		if ctx.Err() == nil {
			g.logger.Warn("stall sweep", "error", err)
		}
		return
	}
	if n > 0 {
		g.metrics.Stalled.Add(float64(n))
		g.wakeEvents() // request.stalled
		g.logger.Warn("requests not picked up by any responder; flagged stalled",
			"count", n, "after", g.cfg.StallAfter.String())
	}
}

// WakeRelay makes the event relay look for events to publish now.
func (g *Gateway) WakeRelay() { g.wakeEvents() }

func (g *Gateway) wakeRelay() {
	select {
	case g.relayWake <- struct{}{}:
	default:
	}
}

// runRelay publishes queued requests: those whose submitter failed to
// publish, and those left behind by an instance that died.
func (g *Gateway) runRelay(ctx context.Context) {
	g.relayLoop(ctx, g.relayWake, g.publisher, func() {
		g.drain(ctx, "outbox relay", func() (int, error) {
			return g.store.ClaimOutbox(ctx, g.cfg.RelayBatch, relayBackoff, g.publishBatch)
		})
		g.wakeEvents() // what the relay's outcomes announced
	})
}

// runEventRelay publishes the event outbox. Lifecycle events are written
// by triggers on every submit and every ending, so it is woken by those
// (wakes coalesce: under load it runs back to back, a batch at a time) and
// by its ticker for events written by other instances. Once woken it waits
// eventLinger before it claims: the events of the requests submitted and
// answered meanwhile go out in one batch, and the relay's commits and
// publishes stay out of the way of the request that woke it.
func (g *Gateway) runEventRelay(ctx context.Context) {
	g.relayLoop(ctx, g.eventsWake, g.events, func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(eventLinger):
		}
		g.drainEvents(ctx)
	})
}

// eventLinger is how long the event relay lets events gather. With one
// client the gateway's p50 was 3.3 ms for a submit and 7.0 ms for a round
// trip without it, 1.7 and 4.4 ms with it (BENCHMARKS.md); an event is
// published that much later.
const eventLinger = 20 * time.Millisecond

// relayLoop runs relay on every wake and every RelayInterval while the
// publisher is ready, until ctx ends.
func (g *Gateway) relayLoop(ctx context.Context, wake <-chan struct{}, p *Publisher, relay func()) {
	tick := time.NewTicker(g.cfg.RelayInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-wake:
		}
		if p.ready() {
			relay()
		}
	}
}

func (g *Gateway) drainEvents(ctx context.Context) {
	g.drain(ctx, "event relay", func() (int, error) {
		return g.store.ClaimEvents(ctx, g.cfg.RelayBatch, relayBackoff, g.publishEvents)
	})
}

// wakeEvents makes the event relay look for events now.
func (g *Gateway) wakeEvents() {
	select {
	case g.eventsWake <- struct{}{}:
	default:
	}
}

// drain claims batches until one comes back short.
func (g *Gateway) drain(ctx context.Context, what string, claim func() (int, error)) {
	for ctx.Err() == nil {
		n, err := claim()
		if err != nil {
			if ctx.Err() == nil {
				g.logger.Warn(what, "error", err)
			}
			return
		}
		if n < g.cfg.RelayBatch {
			return
		}
	}
}

// relayBackoff spaces out republish attempts of a request the broker keeps
// refusing: 1s, 2s, 4s ... up to a minute.
func relayBackoff(attempts int) time.Duration {
	d := time.Second << min(max(attempts-1, 0), 6)
	return min(d, time.Minute)
}

// publishBatch publishes a claimed batch with pipelined confirms.
func (g *Gateway) publishBatch(ctx context.Context, batch []correlation.Request) []correlation.PublishResult {
	results := make([]correlation.PublishResult, len(batch))
	var wg sync.WaitGroup
	now := time.Now()
	for i, r := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := g.publishRequest(ctx, r, now)
			results[i] = correlation.PublishResult{ID: r.ID, Confirmed: err == nil, Unroutable: errors.Is(err, ErrUnroutable), Err: err}
			g.metrics.RelayPublishes.WithLabelValues(publishLabel(err)).Inc()
		}()
	}
	wg.Wait()
	return results
}

func (g *Gateway) runSweeper(ctx context.Context) {
	tick := time.NewTicker(g.cfg.SweepInterval)
	defer tick.Stop()
	lastPurge := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(lastPurge) >= g.cfg.PurgeInterval {
			lastPurge = time.Now()
			n, err := g.store.Purge(ctx, g.cfg.Retention, g.cfg.PurgeBatch)
			if err != nil && ctx.Err() == nil {
				g.logger.Warn("retention purge", "error", err)
			}
			if n > 0 {
				g.metrics.Purged.Add(float64(n))
				g.logger.Info("removed rows past retention", "count", n, "retention", g.cfg.Retention.String())
			}
		}
		n, err := g.store.ExpireDue(ctx)
		if err != nil {
			if ctx.Err() == nil {
				g.logger.Warn("expiry sweep", "error", err)
			}
			continue
		}
		if n > 0 {
			g.metrics.Expired.Add(float64(n))
			g.wakeEvents() // request.expired
			g.logger.Info("expired overdue requests", "count", n)
		}
		if g.cfg.StallAfter > 0 {
			g.flagStalled(ctx)
		}
	}
}

// NewID makes a message id: a v7 UUID, so ids sort by creation time and
// index well.
func NewID() uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.New()
	}
	return id
}

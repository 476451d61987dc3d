// Package responder is the Go SDK for services that answer switchboard
// requests. A Responder declares its durable queue, binds it to the request
// exchange for its routing-key patterns, and for each request calls a
// Handler, publishes the reply to the request's reply_to with the request's
// message id as correlation_id (the standard RabbitMQ RPC convention), waits
// for the broker to confirm the reply, and only then acks the request. A
// crash anywhere in between means the request is redelivered and handled
// again; the gateway keeps the first reply and ignores duplicates.
//
// While it works, a Handler may tell followers of the request how far along
// it is with Progress, or publish other events about it with PublishEvent
// (CONTRACT §5): CloudEvents on the events exchange, confirmed by the broker.
//
// Each request is handled in its trace: the SDK reads the W3C traceparent
// the gateway sent with it, starts a consumer span (Config.TracerProvider)
// that the Handler's ctx carries, and sends that span's traceparent with
// the reply and with every event, so the gateway and followers continue it.
//
// Nothing here is required by the gateway: a responder written with any AMQP
// client that follows CONTRACT §3 works just as well.
package responder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-gw/switchboard/internal/amqpheader"
	"github.com/switchboard-gw/switchboard/internal/claim"
)

// Request is one request as the responder sees it.
type Request struct {
	ID         string // the request's message id; replies carry it as correlation id
	RoutingKey string // e.g. workflow.create
	Time       int64  // creation time, Unix milliseconds
	// Body is the client's JSON body. For a request that came as a claim
	// check (Claim set), it is the claimed content, fetched from the
	// gateway and checked before the Handler runs, when the content is at
	// most Config.ResolveClaimsUpTo; a larger one stays the claim itself
	// ({"claim": {...}}), and the Handler streams the content with Open.
	Body    json.RawMessage
	Headers amqp.Table
	// Claim is set when the request came as a claim check (CONTRACT §8):
	// its content was too large to travel in the AMQP message.
	Claim *Claim
	// Deadline is when the gateway stops waiting (zero when unknown).
	Deadline time.Time
	// Project is the id of the project the request belongs to (header
	// project); the events Progress publishes carry it.
	Project string

	resolved bool  // Body holds the claimed content
	claimErr error // the claim cannot be resolved: the request fails
	claims   *claimFetcher
}

// Handler does the work. Its reply is marshalled to JSON (a json.RawMessage
// or []byte is sent as is). A returned error becomes a reply with header
// status=error and body {"error": err.Error()}, which marks the request
// failed.
type Handler func(ctx context.Context, req Request) (reply any, err error)

// Config configures a responder.
type Config struct {
	AMQPURL  string
	Exchange string   // the request exchange, default switchboard.requests
	Queue    string   // this service's durable queue
	Patterns []string // topic patterns to bind, e.g. workflow.#
	Prefetch int      // unacked requests held at once, default 16
	// Concurrency is how many requests are handled at once, default Prefetch.
	Concurrency int
	AppID       string
	// EventsExchange is the topic exchange Progress and PublishEvent
	// publish to, default switchboard.events.
	EventsExchange string
	// ReceivedAfter is how long a handler runs before the responder
	// publishes a request.received event (TypeReceived) about its request,
	// timed when the handler started. The event sets the record's
	// picked_up_at and keeps a request that is being worked on from being
	// flagged stalled (SWITCHBOARD_STALL_AFTER); a request answered sooner
	// needs none, as its reply sets picked_up_at, so fast handlers publish
	// no extra message. 0: DefaultReceivedAfter (250 ms); negative: at once.
	ReceivedAfter time.Duration
	// NoReceivedEvents stops request.received events altogether.
	NoReceivedEvents bool
	// GatewayURL is the gateway's base URL (e.g. http://127.0.0.1:8080),
	// from which claimed request bodies are fetched (GET /v1/blobs/{id}).
	// Empty: a claimed request fails with an error reply.
	GatewayURL string
	// APIKey authenticates those fetches: a key that may read the
	// requests this responder serves. Empty: none sent.
	APIKey string
	// HTTPClient fetches claimed bodies; nil: a client with no overall
	// timeout (a body may be 1 GiB), bounded by the request's deadline.
	HTTPClient *http.Client
	// ResolveClaimsUpTo is the largest claimed body read into
	// Request.Body before the Handler runs; larger ones are left to
	// Request.Open, so they are never held whole in memory. 0:
	// DefaultResolveClaimsUpTo (64 MiB); negative: none, always Open.
	ResolveClaimsUpTo int64
	Logger            *slog.Logger
	// TracerProvider traces each request handled with a consumer span that
	// continues the request's trace (its traceparent header); the
	// Handler's ctx carries it, so the service's own spans nest under it,
	// and the reply and the events carry it on. Nil: the global provider
	// (otel.GetTracerProvider), which records nothing until the service
	// sets one up — the trace context is carried on all the same.
	TracerProvider trace.TracerProvider
}

func (c *Config) defaults() error {
	if c.AMQPURL == "" {
		c.AMQPURL = "amqp://guest:guest@127.0.0.1:5672/"
	}
	if c.Exchange == "" {
		c.Exchange = "switchboard.requests"
	}
	if c.ReceivedAfter == 0 {
		c.ReceivedAfter = DefaultReceivedAfter
	}
	if c.ResolveClaimsUpTo == 0 {
		c.ResolveClaimsUpTo = DefaultResolveClaimsUpTo
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.EventsExchange == "" {
		c.EventsExchange = "switchboard.events"
	}
	if c.Queue == "" {
		return errors.New("responder queue name is empty")
	}
	if len(c.Patterns) == 0 {
		return errors.New("responder needs at least one routing-key pattern")
	}
	if c.Prefetch <= 0 {
		c.Prefetch = 16
	}
	if c.Concurrency <= 0 {
		c.Concurrency = c.Prefetch
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Responder serves requests with a Handler.
type Responder struct {
	cfg     Config
	handler Handler
	tracer  trace.Tracer
	ready   chan struct{}
	once    sync.Once
}

// New returns a responder; nothing connects until Run.
func New(cfg Config, h Handler) (*Responder, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("responder handler is nil")
	}
	return &Responder{cfg: cfg, handler: h, tracer: cfg.tracer(), ready: make(chan struct{})}, nil
}

// Ready is closed once the queue is declared, bound and consumed the first
// time.
func (r *Responder) Ready() <-chan struct{} { return r.ready }

// Run serves until ctx ends, reconnecting with backoff when the broker goes
// away. Requests being handled when ctx ends are finished and acked first.
func (r *Responder) Run(ctx context.Context) error {
	wait := 100 * time.Millisecond
	for {
		started := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > 10*time.Second {
			wait = 100 * time.Millisecond
		}
		r.cfg.Logger.Warn("responder lost the broker; reconnecting", "queue", r.cfg.Queue, "error", err, "backoff", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
		wait = min(wait*2, 10*time.Second)
	}
}

func (r *Responder) session(ctx context.Context) error {
	conn, err := amqp.DialConfig(r.cfg.AMQPURL, amqp.Config{
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "switchboard responder " + r.cfg.Queue},
		Dial:       amqp.DefaultDial(5 * time.Second),
	})
	if err != nil {
		return err
	}
	defer conn.Close()

	in, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := in.ExchangeDeclare(r.cfg.Exchange, "topic", true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange: %w", err)
	}
	if _, err := in.QueueDeclare(r.cfg.Queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue: %w", err)
	}
	for _, p := range r.cfg.Patterns {
		if err := in.QueueBind(r.cfg.Queue, p, r.cfg.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind %s: %w", p, err)
		}
	}
	if err := in.Qos(r.cfg.Prefetch, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	out, err := newReplier(conn)
	if err != nil {
		return err
	}
	defer out.close()
	events := newEventPublisher(conn, r.cfg.EventsExchange)
	defer events.close()

	tag := "responder-" + uuid.NewString()
	deliveries, err := in.Consume(r.cfg.Queue, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	r.once.Do(func() { close(r.ready) })

	work := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range r.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range deliveries {
				r.handle(work, out, events, d)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	select {
	case <-ctx.Done():
		_ = in.Cancel(tag, false)
		<-done
		return nil
	case err := <-closed:
		<-done
		if err == nil {
			return errors.New("connection closed")
		}
		return err
	case <-done:
		return errors.New("deliveries stopped")
	}
}

func (r *Responder) handle(ctx context.Context, out *replier, events *eventPublisher, d amqp.Delivery) {
	ctx, span := startHandlerSpan(ctx, r.tracer, d)
	defer span.End()
	req := Request{ID: d.MessageId, RoutingKey: d.RoutingKey, Body: d.Body, Headers: d.Headers,
		claims: &claimFetcher{base: r.cfg.GatewayURL, apiKey: r.cfg.APIKey, client: r.cfg.HTTPClient}}
	if p, ok := d.Headers["project"].(string); ok {
		req.Project = p
	}
	if t, ok := amqpheader.Int(d.Headers["time"]); ok {
		req.Time = t
	} else if !d.Timestamp.IsZero() {
		req.Time = d.Timestamp.UnixMilli()
	}
	hctx := ctx
	if at, ok := amqpheader.Int(d.Headers["expires_at"]); ok && at > 0 {
		req.Deadline = time.UnixMilli(at) // the gateway's own deadline
	} else if ms, err := strconv.ParseInt(d.Expiration, 10, 64); err == nil && ms > 0 {
		req.Deadline = time.Now().Add(time.Duration(ms) * time.Millisecond) // an upper bound: queue time is unknown
	}
	if !req.Deadline.IsZero() {
		var cancel context.CancelFunc
		hctx, cancel = context.WithDeadline(ctx, req.Deadline)
		defer cancel()
	}
	hctx = withHandlerEvents(hctx, &handlerEvents{req: req, pub: events, source: r.eventSource(), appID: r.cfg.AppID})
	log := r.cfg.Logger.With("request_id", req.ID, "routing_key", req.RoutingKey)

	if d.ReplyTo == "" {
		// Nobody to answer: handle nothing, keep nothing waiting.
		log.WarnContext(ctx, "request without reply_to; acked without handling")
		_ = d.Ack(false)
		return
	}

	if isClaim(d.Headers) {
		if requeue := r.resolveClaim(hctx, &req); requeue != nil {
			// The gateway is away for now: try again later rather than
			// fail a request whose content is safe where it is.
			log.WarnContext(ctx, "claimed body not fetched; request requeued", "error", requeue)
			time.Sleep(time.Second)
			_ = d.Nack(false, true)
			return
		}
	}

	stopAnnounce := func() bool { return false }
	if !r.cfg.NoReceivedEvents {
		// Announce the pick-up if the handler is still at work by then, so
		// the record shows picked_up_at and not stalled. Best effort: the
		// request is handled whether or not the broker confirms it.
		started := time.Now()
		stopAnnounce = time.AfterFunc(max(r.cfg.ReceivedAfter, 0), func() {
			if err := publishEvent(hctx, TypeReceived, receivedData{Queue: r.cfg.Queue}, started); err != nil {
				log.WarnContext(hctx, "request.received not published", "error", err)
			}
		}).Stop
	}
	var reply []byte
	var status string
	if req.claimErr != nil {
		reply, _ = json.Marshal(map[string]string{"error": req.claimErr.Error()})
		status = "error"
	} else {
		reply, status = r.call(hctx, req)
	}
	stopAnnounce() // answered in time: the reply says it was picked up
	if status == "error" {
		span.SetStatus(codes.Error, "the handler failed")
	}
	if err := out.publish(ctx, d.ReplyTo, req.ID, r.cfg.AppID, reply, status); err != nil {
		span.SetStatus(codes.Error, "reply not confirmed: "+err.Error())
		log.WarnContext(ctx, "reply not confirmed; request requeued", "error", err)
		_ = d.Nack(false, true)
		return
	}
	if err := d.Ack(false); err != nil {
		log.WarnContext(ctx, "ack request", "error", err) // redelivered; the duplicate reply is ignored
	}
}

// call runs the handler and turns its result into a reply body and status.
func (r *Responder) call(ctx context.Context, req Request) (body []byte, status string) {
	defer func() {
		if v := recover(); v != nil {
			body, _ = json.Marshal(map[string]string{"error": fmt.Sprint("handler panic: ", v)})
			status = "error"
		}
	}()
	reply, err := r.handler(ctx, req)
	if err != nil {
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		return b, "error"
	}
	switch v := reply.(type) {
	case json.RawMessage:
		if json.Valid(v) {
			return v, "ok"
		}
	case []byte:
		if json.Valid(v) {
			return v, "ok"
		}
	default:
		b, err := json.Marshal(v)
		if err == nil {
			return b, "ok"
		}
		b, _ = json.Marshal(map[string]string{"error": "marshal reply: " + err.Error()})
		return b, "error"
	}
	b, _ := json.Marshal(map[string]string{"error": "handler returned bytes that are not JSON"})
	return b, "error"
}

// replier publishes replies on a confirm-mode channel.
type replier struct {
	mu sync.Mutex
	ch *amqp.Channel
}

func newReplier(conn *amqp.Connection) (*replier, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("enable confirms: %w", err)
	}
	return &replier{ch: ch}, nil
}

func (p *replier) close() { _ = p.ch.Close() }

func (p *replier) publish(ctx context.Context, replyTo, correlationID, appID string, body []byte, status string) error {
	now := time.Now()
	msg := amqp.Publishing{
		Headers:       amqp.Table{"time": now.UnixMilli(), "status": status},
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		CorrelationId: correlationID,
		MessageId:     uuid.NewString(),
		Timestamp:     now,
		AppId:         appID,
		Body:          body,
	}
	injectTrace(ctx, msg.Headers) // the handler's span: the gateway's reply span continues it
	p.mu.Lock()
	confirm, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, "", replyTo, false, false, msg)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ok, err := confirm.WaitContext(cctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("reply nacked by the broker")
	}
	return nil
}

// resolveClaim reads a claimed body into req (up to ResolveClaimsUpTo). A
// claim that can never be resolved (malformed, refused, not matching its
// digest) is left in req.claimErr, to fail the request; any other error is
// returned, to requeue it.
func (r *Responder) resolveClaim(ctx context.Context, req *Request) error {
	c, err := claim.Parse(req.Body)
	if err != nil {
		req.claimErr = err
		return nil
	}
	req.Claim = &c
	if c.Size > r.cfg.ResolveClaimsUpTo {
		return nil // the Handler streams it with Open
	}
	body, err := req.claims.resolve(ctx, c)
	switch {
	case err == nil:
		req.Body, req.resolved = body, true
		return nil
	case permanent(err):
		req.claimErr = err
		return nil
	default:
		return err
	}
}

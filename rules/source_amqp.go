package rules

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultQueuePrefix prefixes the durable queue of every AMQP source:
// source "workspace" consumes from switchboard.rules.workspace.
const DefaultQueuePrefix = "switchboard.rules"

// AMQPOptions are the broker settings every AMQP source of a runner shares.
type AMQPOptions struct {
	// URL is the broker.
	URL string
	// QueuePrefix names the sources' queues: <QueuePrefix>.<source name>.
	QueuePrefix string
	// DeadLetterExchange, when set, is the x-dead-letter-exchange of the
	// sources' queues (messages the broker gives up on go there).
	DeadLetterExchange string
	// Prefetch bounds the unacked events a source holds, and is how many it
	// hands to the engine at once.
	Prefetch int
	// ReconnectMin and ReconnectMax bound the backoff between connection
	// attempts.
	ReconnectMin, ReconnectMax time.Duration
	// RetryMin and RetryMax bound the backoff between attempts to hand an
	// event to an engine that could not decide (Postgres away).
	RetryMin, RetryMax time.Duration
}

func (o AMQPOptions) withDefaults() AMQPOptions {
	if o.QueuePrefix == "" {
		o.QueuePrefix = DefaultQueuePrefix
	}
	if o.Prefetch <= 0 {
		o.Prefetch = 8
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = 200 * time.Millisecond
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = max(10*time.Second, o.ReconnectMin)
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 100 * time.Millisecond
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(5*time.Second, o.RetryMin)
	}
	return o
}

// AMQPConsumer is an AMQP source: a durable quorum queue of the rule
// engine's own, <prefix>.<source name>, bound to the source's exchange for
// each of its binding patterns. Every instance of switchboard consumes the
// same queue, so each event is handled once.
//
// An event is acked only after the handler returned nil. When the handler
// fails (nothing was decided, e.g. Postgres is away) the delivery is kept in
// hand and offered again with backoff; on shutdown it is nacked back to the
// queue. Retrying in hand rather than nack-and-requeue keeps the event from
// counting against a quorum queue's delivery limit (RabbitMQ 4 sets one by
// default) while the outage lasts.
//
// The source keeps its own connection and reconnects with backoff; unacked
// deliveries of a lost connection are redelivered by the broker, so a
// handler can see an event twice (actions derive their output ids from the
// event id for that reason).
type AMQPConsumer struct {
	name   string
	cfg    AMQPSource
	opts   AMQPOptions
	logger *slog.Logger

	// stale are bindings of an earlier configuration of this source that
	// are removed from the queue on connect.
	stale []amqpBinding

	readyOnce sync.Once
	ready     chan struct{}
}

type amqpBinding struct{ exchange, key string }

// NewAMQPSource returns the AMQP source name configured by cfg. Nothing
// connects until Run.
func NewAMQPSource(name string, cfg AMQPSource, opts AMQPOptions, logger *slog.Logger) *AMQPConsumer {
	return &AMQPConsumer{name: name, cfg: cfg, opts: opts.withDefaults(), logger: logger.With("rule_source", name), ready: make(chan struct{})}
}

// Name is the source's name in the rule files.
func (s *AMQPConsumer) Name() string { return s.name }

// Queue is the source's durable queue.
func (s *AMQPConsumer) Queue() string { return s.opts.QueuePrefix + "." + s.name }

// Ready is closed once the queue has been declared, bound and consumed for
// the first time: events published to the exchange from then on are not
// missed.
func (s *AMQPConsumer) Ready() <-chan struct{} { return s.ready }

// Run consumes until ctx ends, reconnecting with backoff when the broker
// goes away. It returns nil when ctx ends.
func (s *AMQPConsumer) Run(ctx context.Context, h Handler) error {
	wait := s.opts.ReconnectMin
	for ctx.Err() == nil {
		started := time.Now()
		err := s.session(ctx, h)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > s.opts.ReconnectMax {
			wait = s.opts.ReconnectMin // it was up for a while: start the backoff afresh
		}
		s.logger.Warn("rule source lost its broker connection; reconnecting", "error", err, "backoff", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
		wait = min(wait*2, s.opts.ReconnectMax)
	}
	return nil
}

func (s *AMQPConsumer) session(ctx context.Context, h Handler) error {
	conn, err := amqp.DialConfig(s.opts.URL, amqp.Config{
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
		Properties: amqp.Table{"connection_name": "switchboard rules " + s.name},
		Dial:       amqp.DefaultDial(5 * time.Second),
	})
	if err != nil {
		return fmt.Errorf("dial broker: %w", err)
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	defer ch.Close()
	if err := s.declare(ch); err != nil {
		return err
	}
	if err := ch.Qos(s.opts.Prefetch, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	tag := "switchboard-rules-" + uuid.NewString()
	deliveries, err := ch.Consume(s.Queue(), tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", s.Queue(), err)
	}
	s.readyOnce.Do(func() { close(s.ready) })
	s.logger.Info("rule source consuming", "queue", s.Queue(), "exchange", s.cfg.Exchange, "bindings", s.cfg.Bindings)

	var wg sync.WaitGroup
	for range s.opts.Prefetch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range deliveries {
				s.deliver(ctx, h, d)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-ctx.Done():
		_ = ch.Cancel(tag, false)
		<-done
		return nil
	case <-done:
		if e := <-closed; e != nil {
			return e
		}
		return errors.New("deliveries stopped")
	}
}

// declare makes sure the exchange, the queue and exactly the configured
// bindings (as far as this source knows them) exist.
func (s *AMQPConsumer) declare(ch *amqp.Channel) error {
	if err := ch.ExchangeDeclare(s.cfg.Exchange, "topic", true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", s.cfg.Exchange, err)
	}
	args := amqp.Table{"x-queue-type": "quorum"}
	if s.opts.DeadLetterExchange != "" {
		args["x-dead-letter-exchange"] = s.opts.DeadLetterExchange
	}
	if _, err := ch.QueueDeclare(s.Queue(), true, false, false, false, args); err != nil {
		return fmt.Errorf("declare queue %s: %w", s.Queue(), err)
	}
	for _, key := range s.cfg.Bindings {
		if err := ch.QueueBind(s.Queue(), key, s.cfg.Exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %s to %s with %q: %w", s.Queue(), s.cfg.Exchange, key, err)
		}
	}
	for _, b := range s.stale {
		if b.exchange == s.cfg.Exchange && slices.Contains(s.cfg.Bindings, b.key) {
			continue
		}
		if err := ch.QueueUnbind(s.Queue(), b.key, b.exchange, nil); err != nil {
			return fmt.Errorf("unbind queue %s from %s with %q: %w", s.Queue(), b.exchange, b.key, err)
		}
		s.logger.Info("rule source binding removed", "exchange", b.exchange, "binding", b.key)
	}
	return nil
}

// deliver hands d to h until h decides or ctx ends. The handler runs on a
// context that shutdown does not cancel, so an event in progress finishes.
func (s *AMQPConsumer) deliver(ctx context.Context, h Handler, d amqp.Delivery) {
	ev := eventFromDelivery(d)
	work := context.WithoutCancel(ctx)
	wait := s.opts.RetryMin
	for {
		err := h(work, ev)
		if err == nil {
			_ = d.Ack(false)
			return
		}
		s.logger.Warn("rule engine could not take the event; holding it", "error", err, "event_id", ev.ID, "backoff", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			_ = d.Nack(false, true) // back to the queue for the next consumer
			return
		}
		wait = min(wait*2, s.opts.RetryMax)
	}
}

// eventFromDelivery reads an event from an AMQP message: a structured-mode
// CloudEvent body is taken as it is; any other body is the data of an event
// built from the message's properties.
func eventFromDelivery(d amqp.Delivery) Event {
	fallback := Event{
		ID:     d.MessageId,
		Source: "amqp://" + d.Exchange + "/" + d.RoutingKey,
		Type:   d.Type,
		Time:   d.Timestamp.UTC(),
		Hops:   hopsOf(d.Headers["switchboardhops"]),
	}
	if fallback.ID == "" {
		// Nothing to deduplicate on but the content: the same message
		// redelivered keeps its id.
		sum := sha256.Sum256(append([]byte(d.Exchange+"\x00"+d.RoutingKey+"\x00"), d.Body...))
		fallback.ID = "sha256:" + hex.EncodeToString(sum[:])
	}
	if fallback.Type == "" {
		fallback.Type = d.RoutingKey
	}
	if d.Timestamp.IsZero() {
		fallback.Time = time.Now().UTC()
	}
	return eventFromBody(d.Body, fallback)
}

// eventFromBody is how every source reads a body. A JSON object with a
// specversion attribute is a structured-mode CloudEvent: its id, source,
// type, time, subject, data and switchboardhops are taken as they are, and
// fallback fills only what it lacks. Any other body is the data of fallback:
// JSON as it is, anything else as a JSON string.
func eventFromBody(body []byte, fallback Event) Event {
	trimmed := bytes.TrimSpace(body)
	if !json.Valid(trimmed) {
		ev := fallback
		ev.Data, _ = json.Marshal(string(body))
		return ev
	}
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var ce struct {
			SpecVersion *string         `json:"specversion"`
			ID          string          `json:"id"`
			Source      string          `json:"source"`
			Type        string          `json:"type"`
			Time        string          `json:"time"`
			Subject     string          `json:"subject"`
			Data        json.RawMessage `json:"data"`
			DataBase64  string          `json:"data_base64"`
			Hops        any             `json:"switchboardhops"`
		}
		if err := json.Unmarshal(trimmed, &ce); err == nil && ce.SpecVersion != nil {
			ev := fallback
			if ce.ID != "" {
				ev.ID = ce.ID
			}
			if ce.Source != "" {
				ev.Source = ce.Source
			}
			if ce.Type != "" {
				ev.Type = ce.Type
			}
			if t, err := time.Parse(time.RFC3339Nano, ce.Time); err == nil {
				ev.Time = t.UTC()
			}
			ev.Subject = ce.Subject
			switch {
			case len(ce.Data) > 0:
				ev.Data = ce.Data
			case ce.DataBase64 != "":
				ev.Data, _ = json.Marshal(ce.DataBase64)
			default:
				ev.Data = json.RawMessage("null")
			}
			if ce.Hops != nil {
				ev.Hops = hopsOf(ce.Hops)
			}
			return ev
		}
	}
	ev := fallback
	ev.Data = json.RawMessage(trimmed)
	return ev
}

// hopsOf reads the switchboardhops extension, a number or (CloudEvents
// extensions are often strings) a numeral.
func hopsOf(v any) int {
	switch n := v.(type) {
	case float64:
		return int(n)
	case int:
		return n
	case int8:
		return int(n)
	case int16:
		return int(n)
	case int32:
		return int(n)
	case int64:
		return int(n)
	case string:
		i, _ := strconv.Atoi(strings.TrimSpace(n))
		return i
	}
	return 0
}

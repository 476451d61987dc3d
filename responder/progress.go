package responder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrNoRequest is returned by Progress and PublishEvent when ctx is not a
// Handler's context: an event is always about the request being handled.
var ErrNoRequest = errors.New("no request in the context: events are published from inside a Handler, with its ctx")

// eventConfirmTimeout bounds the wait for the broker to confirm an event.
const eventConfirmTimeout = 10 * time.Second

// maxRoutingKey is the longest AMQP routing key (a short string).
const maxRoutingKey = 255

// Progress tells whoever follows the request being handled how far along
// it is: fraction is the part done, from 0 to 1 (values outside are
// clamped; NaN is refused), and message says what is happening. It
// publishes a CloudEvent of type progress on the events exchange, routing
// key progress.<request routing key>, with data
// {"state":"running","progress":fraction,"message":message}, and returns
// once the broker has confirmed it. ctx must be the Handler's (or derived
// from it); otherwise Progress returns ErrNoRequest.
//
// A failed Progress does not fail the request: the handler may carry on.
func Progress(ctx context.Context, fraction float64, message string) error {
	if math.IsNaN(fraction) {
		return errors.New("progress is NaN; give the fraction done, from 0 to 1")
	}
	return PublishEvent(ctx, "progress", progressData{State: "running", Progress: min(max(fraction, 0), 1), Message: message})
}

// TypeReceived is the type of the event a responder publishes as it starts
// on a request (CONTRACT §8), routing key request.received.<routing key>.
// The gateway sets the request's picked_up_at when it stores it.
const TypeReceived = "request.received"

// DefaultReceivedAfter is how long a handler runs before the responder
// announces the request as picked up (Config.ReceivedAfter).
const DefaultReceivedAfter = 250 * time.Millisecond

// receivedData is the data of a request.received event.
type receivedData struct {
	Queue string `json:"queue,omitempty"` // the queue the request was taken from
}

// progressData is the data of a progress event (CONTRACT §5).
type progressData struct {
	State    string  `json:"state"`
	Progress float64 `json:"progress"`
	Message  string  `json:"message,omitempty"`
}

// PublishEvent publishes a CloudEvent of type typ about the request being
// handled, e.g. request.received once work starts (CONTRACT §8). data is
// marshalled to JSON (a json.RawMessage is sent as is; nil sends no data).
// The routing key is <typ>.<request routing key>, so subscribers can follow
// one kind of event for one service. The event carries the request id as
// subject, as the correlationid extension and as the AMQP correlation_id,
// and PublishEvent returns once the broker has confirmed it. ctx must be
// the Handler's (or derived from it); otherwise it returns ErrNoRequest.
func PublishEvent(ctx context.Context, typ string, data any) error {
	return publishEvent(ctx, typ, data, time.Now())
}

// publishEvent is PublishEvent of an event whose time is at.
func publishEvent(ctx context.Context, typ string, data any, at time.Time) error {
	if typ == "" || strings.ContainsAny(typ, "*#") || strings.HasPrefix(typ, ".") || strings.HasSuffix(typ, ".") {
		return fmt.Errorf("event type %q must be dot-separated words without * or #", typ)
	}
	h, ok := ctx.Value(handlerEventsKey{}).(*handlerEvents)
	if !ok {
		return ErrNoRequest
	}
	if h.req.ID == "" {
		return errors.New("the request has no message id to correlate an event with")
	}
	key := typ + "." + h.req.RoutingKey
	if len(key) > maxRoutingKey {
		return fmt.Errorf("routing key %q is longer than %d bytes", key, maxRoutingKey)
	}
	id := uuid.NewString()
	body, err := buildProjectEvent(id, typ, h.source, h.req.ID, h.req.Project, data, at)
	if err != nil {
		return err
	}
	msg := amqp.Publishing{
		Headers:       amqp.Table{},
		ContentType:   "application/cloudevents+json",
		DeliveryMode:  amqp.Persistent,
		CorrelationId: h.req.ID,
		MessageId:     id,
		Timestamp:     at,
		Type:          typ,
		AppId:         h.appID,
		Body:          body,
	}
	injectTrace(ctx, msg.Headers) // the span current in the handler: the event is part of its trace
	if err := h.pub.publish(ctx, key, msg); err != nil {
		return fmt.Errorf("publish %s event: %w", typ, err)
	}
	return nil
}

// cloudEvent is the structured-mode CloudEvents 1.0 JSON envelope, as the
// gateway publishes it (the responder SDK does not import the gateway).
type cloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            time.Time       `json:"time"`
	Subject         string          `json:"subject"`
	DataContentType string          `json:"datacontenttype"`
	CorrelationID   string          `json:"correlationid"`
	Project         string          `json:"switchboardproject,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
}

// buildEvent returns the JSON of the event id of type typ about request
// requestID.
func buildEvent(id, typ, source, requestID string, data any, now time.Time) ([]byte, error) {
	return buildProjectEvent(id, typ, source, requestID, "", data, now)
}

// buildProjectEvent is buildEvent for a request of project (the extension
// attribute switchboardproject; left out when empty).
func buildProjectEvent(id, typ, source, requestID, project string, data any, now time.Time) ([]byte, error) {
	var raw json.RawMessage
	switch v := data.(type) {
	case nil:
	case json.RawMessage:
		if !json.Valid(v) {
			return nil, errors.New("event data is not valid JSON")
		}
		raw = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("marshal event data: %w", err)
		}
		raw = b
	}
	return json.Marshal(cloudEvent{
		SpecVersion: "1.0", ID: id, Source: source, Type: typ, Time: now.UTC(),
		Subject: requestID, DataContentType: "application/json", CorrelationID: requestID, Project: project, Data: raw,
	})
}

// eventSource is the CloudEvents source of this responder's events. It is
// a URI reference, so the name is escaped as a path segment.
func (r *Responder) eventSource() string {
	name := r.cfg.AppID
	if name == "" {
		name = r.cfg.Queue
	}
	return "switchboard-responder/" + url.PathEscape(name)
}

// handlerEvents is what a Handler's context carries so Progress and
// PublishEvent know the request and how to publish.
type handlerEvents struct {
	req    Request
	pub    *eventPublisher
	source string
	appID  string
}

type handlerEventsKey struct{}

func withHandlerEvents(ctx context.Context, h *handlerEvents) context.Context {
	return context.WithValue(ctx, handlerEventsKey{}, h)
}

// eventPublisher publishes events on a confirm-mode channel of the
// responder's connection, shared by the concurrent handlers: the lock
// covers only the publish, and each caller then waits for its own
// (deferred) confirm. The channel is opened on the first event, so a
// responder that publishes none never touches the events exchange, and
// reopened if the broker closed it (say, the exchange was deleted), so one
// channel error does not silence events for the rest of the session.
type eventPublisher struct {
	conn     *amqp.Connection
	exchange string

	mu sync.Mutex
	ch *amqp.Channel
}

func newEventPublisher(conn *amqp.Connection, exchange string) *eventPublisher {
	return &eventPublisher{conn: conn, exchange: exchange}
}

func (p *eventPublisher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch != nil {
		_ = p.ch.Close()
	}
}

// channelLocked returns the open channel, opening it (and declaring the
// exchange, which the gateway declares too) when needed. p.mu must be held.
func (p *eventPublisher) channelLocked() (*amqp.Channel, error) {
	if p.ch != nil && !p.ch.IsClosed() {
		return p.ch, nil
	}
	ch, err := p.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open events channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("enable confirms: %w", err)
	}
	if err := ch.ExchangeDeclare(p.exchange, "topic", true, false, false, false, nil); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("declare exchange %s: %w", p.exchange, err)
	}
	p.ch = ch
	return ch, nil
}

// publish publishes msg, not mandatory (an event nobody subscribed to is
// not an error), and waits for the broker's confirm.
func (p *eventPublisher) publish(ctx context.Context, key string, msg amqp.Publishing) error {
	p.mu.Lock()
	ch, err := p.channelLocked()
	var confirm *amqp.DeferredConfirmation
	if err == nil {
		confirm, err = ch.PublishWithDeferredConfirmWithContext(ctx, p.exchange, key, false, false, msg)
	}
	p.mu.Unlock()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, eventConfirmTimeout)
	defer cancel()
	ok, err := confirm.WaitContext(cctx)
	if err != nil {
		return fmt.Errorf("await confirm: %w", err)
	}
	if !ok {
		return errors.New("the broker nacked the event, or its channel closed")
	}
	return nil
}

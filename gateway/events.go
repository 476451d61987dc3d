package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-gw/switchboard/correlation"
)

// CloudEvent is the structured-mode CloudEvents 1.0 JSON envelope of every
// event the gateway publishes on the events exchange. correlationid is an
// extension attribute carrying the request id.
type CloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            time.Time       `json:"time"`
	Subject         string          `json:"subject,omitempty"`
	DataContentType string          `json:"datacontenttype"`
	CorrelationID   string          `json:"correlationid,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// requestEventData is the data of the gateway's request.* events.
type requestEventData struct {
	ID         string `json:"id"`
	RoutingKey string `json:"routing_key"`
	Status     string `json:"status"`
	// Via says how a reply reached its client (reply.delivered only):
	// webhook or read.
	Via string `json:"via,omitempty"`
}

// CancelRoutingKey is the events-exchange routing key of the event that
// announces the cancellation of a request with routing key key:
// request.cancelled.<key>. A responder serving workflow.# binds
// request.cancelled.workflow.# to hear about its own requests.
func CancelRoutingKey(key string) string { return "request.cancelled." + key }

// requestEvent builds the event of type typ about r.
func requestEvent(typ, routingKey string, r correlation.Request, via string, now time.Time) correlation.Event {
	data, _ := json.Marshal(requestEventData{ID: r.ID.String(), RoutingKey: r.RoutingKey, Status: string(r.Status), Via: via})
	body, _ := json.Marshal(CloudEvent{
		SpecVersion: "1.0", ID: NewID().String(), Source: "switchboard", Type: typ, Time: now.UTC(),
		Subject: r.ID.String(), DataContentType: "application/json", CorrelationID: r.ID.String(), Data: data,
	})
	return correlation.Event{RoutingKey: routingKey, Body: body}
}

// ErrNotCancellable is returned by Cancel for a request that already ended.
var ErrNotCancellable = correlation.ErrNotCancellable

// Cancel cancels an open request: its status becomes cancelled, its waiters
// are woken, and a request.cancelled event is published for the responder
// (through the event outbox, so it is not lost while the broker is away).
func (g *Gateway) Cancel(ctx context.Context, id uuid.UUID) (correlation.Request, error) {
	r, err := g.store.Cancel(ctx, id, func(r correlation.Request) correlation.Event {
		return requestEvent("request.cancelled", CancelRoutingKey(r.RoutingKey), r, "", time.Now())
	})
	if err == nil {
		g.wakeRelay()
	}
	return r, err
}

// publishEvents publishes a claimed batch of outbox events with pipelined
// confirms. Events are not mandatory: an event nobody subscribed to is not
// an error.
func (g *Gateway) publishEvents(ctx context.Context, batch []correlation.OutboxEvent) []error {
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	for i, e := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := g.publisher.Publish(ctx, g.cfg.EventsExchange, e.RoutingKey, false, amqp.Publishing{
				ContentType:  "application/cloudevents+json",
				DeliveryMode: amqp.Persistent,
				MessageId:    NewID().String(),
				Timestamp:    time.Now(),
				AppId:        g.cfg.AppID,
				Body:         e.Body,
			})
			if errors.Is(err, ErrUnroutable) {
				err = nil
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return errs
}

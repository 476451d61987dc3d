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
	"github.com/switchboard-gw/switchboard/events"
)

// CloudEvent is the envelope of every event on the events exchange (see
// package events).
type CloudEvent = events.CloudEvent

// requestEventData is the data of the gateway's request.* events.
type requestEventData struct {
	ID         string `json:"id"`
	RoutingKey string `json:"routing_key"`
	Status     string `json:"status"`
	// Via says how a reply reached its client (reply.delivered only):
	// webhook or read.
	Via string `json:"via,omitempty"`
}

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
	r, err := g.store.Cancel(ctx, id)
	if err == nil {
		g.wakeEvents()
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
			err := g.events.Publish(ctx, g.cfg.EventsExchange, e.RoutingKey, false, amqp.Publishing{
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

// Publish publishes msg, persistent, to exchange with routing key key and
// waits for the broker's confirm. It is for events (e.g. from rule
// actions): not mandatory, so an event nobody is bound to is not an error.
func (g *Gateway) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	msg.DeliveryMode = amqp.Persistent
	if msg.AppId == "" {
		msg.AppId = g.cfg.AppID
	}
	err := g.events.Publish(ctx, exchange, key, false, msg)
	if errors.Is(err, ErrUnroutable) {
		return nil
	}
	return err
}

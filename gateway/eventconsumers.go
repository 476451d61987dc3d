package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-gw/switchboard/events"
)

// The events exchange has two consumers on every instance.
//
// The history consumer shares one durable queue with every other instance
// (bound to #), so each event is stored once: an event naming a known
// request goes into that request's history, and is acked only after it is
// stored. A message that is not an event (not JSON, or a malformed
// CloudEvent) is rejected to the dead-letter exchange, where it is recorded
// with the other dead letters.
//
// The live consumer feeds topic subscriptions (GET /v1/events). Each
// instance needs every event, so it has a queue of its own: exclusive,
// auto-deleted, bounded (the oldest are dropped when subscribers cannot keep
// up), and declared only while this instance has subscribers.

// EventSinks are where consumed events go.
type EventSinks struct {
	History *events.Store
	Live    *events.Hub
}

// SetEventSinks turns on the event consumers; call it before Run.
func (g *Gateway) SetEventSinks(s EventSinks) {
	g.sinks = s
	if s.Live != nil {
		s.Live.SetActivity(func(n int) {
			select {
			case g.liveActivity <- n:
			default:
				// A newer count is already waiting: replace it.
				select {
				case <-g.liveActivity:
				default:
				}
				g.liveActivity <- n
			}
		})
	}
}

// liveQueueLength bounds each instance's live queue.
const liveQueueLength = 10000

func (g *Gateway) serveHistory(ctx context.Context, conn *amqp.Connection) error {
	if g.sinks.History == nil {
		<-ctx.Done()
		return nil
	}
	return consume(ctx, conn, g.cfg.EventHistoryQueue, g.cfg.Prefetch, g.cfg.Prefetch, func(ctx, work context.Context, d amqp.Delivery) {
		g.storeEvent(ctx, work, d)
	})
}

func (g *Gateway) storeEvent(ctx, work context.Context, d amqp.Delivery) {
	in, ok, err := events.FromMessage(d.Body, events.Properties{
		ContentType: d.ContentType, CorrelationID: d.CorrelationId, MessageID: d.MessageId,
		Type: d.Type, AppID: d.AppId, Timestamp: d.Timestamp,
	})
	switch {
	case err != nil:
		g.metrics.Events.WithLabelValues("invalid").Inc()
		g.logger.Warn("event refused; dead-lettered", "error", err, "routing_key", d.RoutingKey)
		_ = d.Reject(false)
		return
	case !ok:
		g.metrics.Events.WithLabelValues("no_request").Inc()
		_ = d.Ack(false)
		return
	}
	var outcome events.Outcome
	err = retryStore(ctx, func() error {
		var err error
		outcome, err = g.sinks.History.Append(work, in)
		return err
	}, func(err error) {
		g.logger.Warn("event history unavailable; holding the event", "error", err)
	})
	if err != nil {
		if ctx.Err() != nil {
			_ = d.Nack(false, true) // shutting down: back to the queue
			return
		}
		g.metrics.Events.WithLabelValues("error").Inc()
		g.logger.Error("store event; dead-lettered", "error", err, "request_id", in.RequestID)
		_ = d.Reject(false)
		return
	}
	g.metrics.Events.WithLabelValues(string(outcome)).Inc()
	_ = d.Ack(false)
}

func (g *Gateway) serveLive(ctx context.Context, conn *amqp.Connection) error {
	if g.sinks.Live == nil {
		<-ctx.Done()
		return nil
	}
	active := g.sinks.Live.Count() > 0
	for {
		for !active {
			select {
			case <-ctx.Done():
				return nil
			case n := <-g.liveActivity:
				active = n > 0
			}
		}
		var err error
		active, err = g.forwardLive(ctx, conn)
		if err != nil || ctx.Err() != nil {
			return err
		}
	}
}

// forwardLive consumes a queue of this instance's own into the hub until
// the last subscriber leaves (it returns false) or ctx ends.
func (g *Gateway) forwardLive(ctx context.Context, conn *amqp.Connection) (bool, error) {
	ch, err := conn.Channel()
	if err != nil {
		return true, fmt.Errorf("open live events channel: %w", err)
	}
	defer ch.Close() // exclusive and auto-deleted: the queue goes with it
	q, err := ch.QueueDeclare("", false, true, true, false, amqp.Table{
		"x-max-length": int64(liveQueueLength),
		"x-overflow":   "drop-head",
	})
	if err != nil {
		return true, fmt.Errorf("declare live events queue: %w", err)
	}
	if err := ch.QueueBind(q.Name, "#", g.cfg.EventsExchange, false, nil); err != nil {
		return true, fmt.Errorf("bind live events queue: %w", err)
	}
	tag := "switchboard-live-" + uuid.NewString()
	deliveries, err := ch.Consume(q.Name, tag, true, true, false, false, nil)
	if err != nil {
		return true, fmt.Errorf("consume live events: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case n := <-g.liveActivity:
			if n == 0 {
				_ = ch.Cancel(tag, false)
				for range deliveries { // drain what was pushed already
				}
				return false, nil
			}
		case d, ok := <-deliveries:
			if !ok {
				return true, errors.New("live events consumer stopped")
			}
			g.sinks.Live.Publish(events.Message{RoutingKey: d.RoutingKey, Body: d.Body})
		}
	}
}

// declareEventHistory declares the shared history queue: quorum, like the
// reply queue, with a delivery limit and the dead-letter exchange.
func (g *Gateway) declareEventHistory(ch *amqp.Channel) error {
	if _, err := ch.QueueDeclare(g.cfg.EventHistoryQueue, true, false, false, false, amqp.Table{
		"x-queue-type":           "quorum",
		"x-delivery-limit":       int64(g.cfg.ReplyDeliveryLimit),
		"x-dead-letter-exchange": g.cfg.DeadLetterExchange,
	}); err != nil {
		return fmt.Errorf("declare queue %s: %w", g.cfg.EventHistoryQueue, err)
	}
	if err := ch.QueueBind(g.cfg.EventHistoryQueue, "#", g.cfg.EventsExchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", g.cfg.EventHistoryQueue, err)
	}
	return nil
}

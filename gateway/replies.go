package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/amqpheader"
)

// replyConsumer stores replies from the reply queue. Each delivery is acked
// only after the correlation store has committed its outcome (stored,
// duplicate, or kept as a dead letter). While Postgres cannot be reached the
// delivery is held and retried, never acked; a reply the store rejects for
// any other reason is rejected to the dead-letter exchange, where the
// dead-letter consumer records it.
type replyConsumer struct {
	cfg    Config
	store  func(context.Context, correlation.IncomingReply) (correlation.Outcome, error)
	logger *slog.Logger
	tracer trace.Tracer
}

// deadLetterRetryPause is how long the dead-letter consumer waits before it
// requeues a message it could not record at all.
const deadLetterRetryPause = 5 * time.Second

// storeTimeout bounds one attempt to store a reply.
const storeTimeout = 10 * time.Second

func (c *replyConsumer) serve(ctx context.Context, conn *amqp.Connection) error {
	return consume(ctx, conn, c.cfg.ReplyQueue, c.cfg.Prefetch, c.cfg.ReplyWorkers, c.handle)
}

func (c *replyConsumer) handle(ctx, work context.Context, d amqp.Delivery) {
	in := replyFromDelivery(d, c.cfg.MaxReplyBytes)
	work, span := startReplySpan(work, c.tracer, c.cfg.ReplyQueue, d)
	defer span.End()
	log := c.logger.With("request_id", d.CorrelationId)
	var outcome correlation.Outcome
	err := retryStore(ctx, func() error {
		sctx, cancel := context.WithTimeout(work, storeTimeout)
		defer cancel()
		var err error
		outcome, err = c.store(sctx, in)
		return err
	}, func(err error) {
		log.WarnContext(work, "store reply: database unavailable; holding the reply", "error", err)
	})
	switch {
	case err == nil:
		span.SetAttributes(attribute.String("switchboard.reply.outcome", string(outcome)))
		if err := d.Ack(false); err != nil {
			// The channel is gone; the broker redelivers and the duplicate is absorbed.
			log.WarnContext(work, "ack reply", "error", err)
		}
	case ctx.Err() != nil:
		// Shutting down with the database away: leave it unacked; the broker
		// redelivers it to whichever instance runs next.
	default:
		span.SetStatus(codes.Error, err.Error())
		log.ErrorContext(work, "store reply failed; rejecting it to the dead-letter exchange", "error", err)
		_ = d.Nack(false, false)
	}
}

// replyFromDelivery reads a reply the standard RabbitMQ way: correlation_id
// names the request, header status=error marks a failure, header time (ms)
// or the timestamp property dates it.
func replyFromDelivery(d amqp.Delivery, maxBytes int) correlation.IncomingReply {
	in := correlation.IncomingReply{
		CorrelationID: d.CorrelationId,
		MessageID:     d.MessageId,
		From:          d.AppId, // who replied, for a gathering request
		Body:          d.Body,
		Source:        "amqp",
		Time:          time.Now().UnixMilli(),
	}
	if in.MessageID == "" {
		in.MessageID = NewID().String() // the record always names the reply
	}
	if t, ok := headerInt(d.Headers["time"]); ok && t > 0 {
		in.Time = t
	} else if !d.Timestamp.IsZero() {
		in.Time = d.Timestamp.UnixMilli()
	}
	if s, ok := d.Headers["status"].(string); ok && strings.EqualFold(strings.TrimSpace(s), "error") {
		in.Failed = true
	}
	switch {
	case len(d.Body) > maxBytes:
		// Kept out of Postgres; the request fails with the reason.
		in.Failed = true
		in.Body, _ = json.Marshal(map[string]any{
			"error":  "reply_too_large",
			"detail": fmt.Sprintf("the responder's reply is %d bytes; the limit is %d", len(d.Body), maxBytes),
		})
	case !json.Valid(in.Body):
		// The record embeds reply bodies as JSON; one that is not JSON
		// cannot be passed on as is. Close the request as failed with a
		// body that says so and keeps the original text.
		in.Failed = true
		in.Body, _ = json.Marshal(map[string]string{
			"error":  "invalid_reply",
			"detail": "the responder's reply body is not valid JSON",
			"raw":    string(d.Body),
		})
	}
	in.Headers = deliveryHeaders(d)
	return in
}

// deliveryHeaders keeps a delivery's properties and headers with a dead letter.
func deliveryHeaders(d amqp.Delivery) map[string]any {
	h := map[string]any{
		"message_id":     d.MessageId,
		"correlation_id": d.CorrelationId,
		"content_type":   d.ContentType,
		"app_id":         d.AppId,
		"type":           d.Type,
		"exchange":       d.Exchange,
		"routing_key":    d.RoutingKey,
		"redelivered":    d.Redelivered,
	}
	for k, v := range d.Headers {
		h["header:"+k] = fmt.Sprint(v)
	}
	return h
}

// headerInt reads an integer header the way every AMQP client may send it.
func headerInt(v any) (int64, bool) { return amqpheader.Int(v) }

// deadLetterConsumer records what the broker dead-lettered from the reply
// queue (rejected, or over the delivery limit) in the dead_letters table,
// then acks it.
type deadLetterConsumer struct {
	cfg     Config
	store   *correlation.Store
	metrics *Metrics
	logger  *slog.Logger
}

func (c *deadLetterConsumer) serve(ctx context.Context, conn *amqp.Connection) error {
	return consume(ctx, conn, c.cfg.DeadLetterQueue, 16, 1, c.handle)
}

func (c *deadLetterConsumer) handle(ctx, work context.Context, d amqp.Delivery) {
	reason := "dead_lettered"
	if deaths, ok := d.Headers["x-death"].([]any); ok && len(deaths) > 0 {
		if death, ok := deaths[0].(amqp.Table); ok {
			if r, ok := death["reason"].(string); ok {
				reason = r // rejected, delivery_limit, expired, maxlen
			}
		}
	}
	in := correlation.IncomingReply{
		CorrelationID: d.CorrelationId, MessageID: d.MessageId, Body: d.Body,
		Source: "amqp", Headers: deliveryHeaders(d),
	}
	keep := func(in correlation.IncomingReply) error {
		return retryStore(ctx, func() error {
			sctx, cancel := context.WithTimeout(work, storeTimeout)
			defer cancel()
			return c.store.KeepDeadLetter(sctx, reason, in)
		}, func(err error) { c.logger.Warn("record dead letter: database unavailable; holding it", "error", err) })
	}
	err := keep(in)
	if err != nil && ctx.Err() == nil {
		// Postgres refused the record itself, not for an outage. Keep the
		// body and the reason it was refused; the properties are what made
		// it unstorable.
		c.logger.Error("record dead letter; keeping a minimal record instead", "request_id", d.CorrelationId, "error", err)
		err = keep(correlation.IncomingReply{Body: d.Body, Source: "amqp", Headers: map[string]any{"store_error": err.Error()}})
	}
	if err != nil {
		if ctx.Err() == nil {
			// Nothing could be recorded: leave it on the queue, visible in
			// the metric, and pause so a message that can never be stored
			// does not spin the consumer.
			c.metrics.DeadLetterErrors.Inc()
			c.logger.Error("record dead letter; leaving it on the queue", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(deadLetterRetryPause):
			}
			_ = d.Nack(false, true)
		}
		return
	}
	c.metrics.DeadLetters.WithLabelValues(reason).Inc()
	c.logger.Warn("message dead-lettered by the broker recorded", "request_id", d.CorrelationId, "reason", reason)
	_ = d.Ack(false)
}

package gateway

import (
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/claim"
)

// requestMessage builds the AMQP message for a request (CONTRACT "Names on
// the wire"): persistent JSON with message_id, timestamp (seconds), header
// time (ms), reply_to, type = routing key, app_id, and an expiration equal to
// the time left before the request's deadline, so a responder never starts
// work nobody is waiting for. Header expires_at (ms) carries the deadline
// itself: expiration counts from publication, and a responder cannot know
// how long the message waited in its queue. Header project is the id of the
// project the request belongs to, so responders can tell projects apart
// (and the responder SDK tags its events with it). Header switchboard-claim
// marks a body that is a claim check for content kept by the gateway.
func requestMessage(r correlation.Request, replyQueue, appID string, now time.Time) amqp.Publishing {
	left := r.ExpiresAt.Sub(now).Milliseconds()
	if left < 1 {
		left = 1
	}
	headers := amqp.Table{"time": r.Time, "expires_at": r.ExpiresAt.UnixMilli(), "project": r.ProjectID.String()}
	if r.Claim {
		headers[claim.Header] = int32(1) // the body is a claim check (CONTRACT §8)
	}
	return amqp.Publishing{
		Headers:      headers,
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    r.ID.String(),
		Timestamp:    time.UnixMilli(r.Time),
		ReplyTo:      replyQueue,
		Expiration:   strconv.FormatInt(left, 10),
		Type:         r.RoutingKey,
		AppId:        appID,
		Body:         r.Body,
	}
}

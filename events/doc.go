// Package events is switchboard's publish-subscribe side: the CloudEvents
// that services and the gateway publish on the events exchange, their
// history per request in Postgres, and live fan-out to HTTP subscribers
// (Server-Sent Events).
package events

// TypeReceived is the type of the event a responder publishes when it
// starts on a request (CONTRACT §8). Storing it sets the request's
// picked_up_at.
const TypeReceived = "request.received"

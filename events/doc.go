// Package events is switchboard's publish-subscribe side: the CloudEvents
// that services and the gateway publish on the events exchange, their
// history per request in Postgres, and live fan-out to HTTP subscribers
// (Server-Sent Events).
package events

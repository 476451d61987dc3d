package rules

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// ErrSourceStopped means an event came for a source that is not running
// (it is being replaced, or the runner is shutting down): nothing was
// decided, and the sender should try again.
var ErrSourceStopped = errors.New("rule source is not running")

// HookReceiver is a webhook source: its events come from POST
// /v1/hooks/{source} (see Runner.Handler), one event per request. It has no
// queue of its own: the HTTP request is answered 202 only after the engine
// has decided the event, so a sender that retries on anything else (with the
// same Idempotency-Key, hence the same event id) loses nothing.
type HookReceiver struct {
	name string

	mu sync.RWMutex
	h  Handler
}

// NewHookSource returns the webhook source name. HookSource has no settings.
func NewHookSource(name string, _ HookSource) *HookReceiver {
	return &HookReceiver{name: name}
}

// Name is the source's name in the rule files, and the last segment of its
// URL.
func (s *HookReceiver) Name() string { return s.name }

// Run takes events for h until ctx ends.
func (s *HookReceiver) Run(ctx context.Context, h Handler) error {
	s.mu.Lock()
	s.h = h
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.h = nil
	s.mu.Unlock()
	return nil
}

// Deliver hands ev to the running handler and returns its answer, or
// ErrSourceStopped when the source is not running.
func (s *HookReceiver) Deliver(ctx context.Context, ev Event) error {
	s.mu.RLock()
	h := s.h
	s.mu.RUnlock()
	if h == nil {
		return ErrSourceStopped
	}
	return h(ctx, ev)
}

// hookEvent builds the event of one webhook call. A structured-mode
// CloudEvent body is taken as it is. Otherwise the body is the data; the id
// is the Idempotency-Key or Event-ID header (else a new UUID, and a retry
// is a new event); the type is the Event-Type header, else the type query
// parameter, else the source's name; the source is hook:<name>.
func hookEvent(name string, r *http.Request, body []byte) Event {
	fallback := Event{
		ID:     firstNonEmpty(r.Header.Get("Idempotency-Key"), r.Header.Get("Event-ID")),
		Source: "hook:" + name,
		Type:   firstNonEmpty(r.Header.Get("Event-Type"), r.URL.Query().Get("type"), name),
		Time:   time.Now().UTC(),
	}
	if fallback.ID == "" {
		fallback.ID = uuid.NewString()
	}
	return eventFromBody(body, fallback)
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

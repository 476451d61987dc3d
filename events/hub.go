package events

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrTooManySubscribers is returned by Subscribe when the hub already has
// its maximum of subscribers.
var ErrTooManySubscribers = errors.New("too many event subscribers")

// Message is one event as the hub fans it out. Body is the CloudEvent's
// JSON; it is shared by every subscriber it goes to, so nobody may modify
// it.
type Message struct {
	RoutingKey string
	Body       []byte
}

// Hub fans events out to live subscribers by topic pattern, in memory.
//
// Publish never waits for a subscriber: each has a buffer of its own, and a
// subscriber whose buffer is full when a message arrives is dropped (its
// channel is closed and Dropped reports true) rather than skipped. Skipping
// would leave a hole in its stream that nobody notices; dropping ends the
// stream visibly, so the client reconnects and catches up from the stored
// history (Last-Event-ID). Either way one slow client can neither hold up
// the publisher and the others nor make the hub hold more than
// maxSubscribers × buffer messages.
type Hub struct {
	buffer int

	mu       sync.Mutex // guards the fields below, and every send and close on a subscription's channel
	max      int
	subs     map[*Subscription]struct{}
	activity func(subscribers int)
	changes  []int // subscriber counts not yet given to activity, oldest first

	notifyMu sync.Mutex // held while calling activity, so calls never overlap and stay in order
	dropped  atomic.Uint64
}

// Subscription is one subscriber's live stream.
type Subscription struct {
	hub     *Hub
	pattern []string
	ch      chan Message
	dropped atomic.Bool
}

// NewHub returns a hub for at most maxSubscribers subscribers at a time,
// each with a buffer of buffer messages. Both must be at least 1: a hub
// with no room, or subscribers that can hold nothing, is a configuration
// mistake, and NewHub panics on it as make does on a negative size.
func NewHub(maxSubscribers, buffer int) *Hub {
	if maxSubscribers < 1 || buffer < 1 {
		panic("events: NewHub needs at least one subscriber with a buffer of at least one message")
	}
	return &Hub{buffer: buffer, max: maxSubscribers, subs: make(map[*Subscription]struct{})}
}

// SetActivity registers f to be told the number of subscribers each time it
// changes, e.g. to declare a broker queue only while somebody listens.
//
// Calls are made outside the hub's lock, one at a time, in the order of the
// changes, and each change is reported before the Subscribe or Close that
// made it returns. A change made by Publish dropping a subscriber is
// reported from another goroutine, since the publisher must not wait on f.
// f must not call Subscribe or Close (it would wait for itself); it may
// call Publish and Count.
func (h *Hub) SetActivity(f func(subscribers int)) {
	h.mu.Lock()
	h.activity = f
	h.mu.Unlock()
}

// Subscribe starts a subscription to the messages whose routing key matches
// pattern. It fails with an error wrapping ErrInvalidPattern for a bad
// pattern, and with ErrTooManySubscribers when the hub is full.
func (h *Hub) Subscribe(pattern string) (*Subscription, error) {
	if err := ValidPattern(pattern); err != nil {
		return nil, err
	}
	s := &Subscription{hub: h, pattern: splitWords(pattern), ch: make(chan Message, h.buffer)}
	h.mu.Lock()
	if len(h.subs) >= h.max {
		h.mu.Unlock()
		return nil, ErrTooManySubscribers
	}
	h.subs[s] = struct{}{}
	h.changedLocked()
	h.mu.Unlock()
	h.notify()
	return s, nil
}

// Publish hands m to every subscriber whose pattern matches m.RoutingKey,
// without ever waiting for one: a subscriber with a full buffer is dropped.
func (h *Hub) Publish(m Message) {
	key := splitWords(m.RoutingKey)
	h.mu.Lock()
	dropped := false
	for s := range h.subs {
		if !matchWords(s.pattern, key) {
			continue
		}
		select {
		case s.ch <- m:
		default:
			s.dropped.Store(true) // before the close, so a reader that sees the close sees it too
			delete(h.subs, s)
			close(s.ch)
			h.dropped.Add(1)
			h.changedLocked()
			dropped = true
		}
	}
	h.mu.Unlock()
	if dropped {
		go h.notify()
	}
}

// Count returns the number of subscribers.
func (h *Hub) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// DroppedTotal returns how many subscribers have been dropped for being too
// slow since the hub was made (a counter, for metrics).
func (h *Hub) DroppedTotal() uint64 { return h.dropped.Load() }

// changedLocked queues the current count for the activity callback. h.mu
// must be held.
func (h *Hub) changedLocked() {
	if h.activity != nil {
		h.changes = append(h.changes, len(h.subs))
	}
}

// notify reports queued changes to the activity callback. Whoever holds
// notifyMu reports every change queued so far, so by the time notify
// returns, the caller's own change has been reported, by itself or by the
// goroutine that held notifyMu before it.
func (h *Hub) notify() {
	h.notifyMu.Lock()
	defer h.notifyMu.Unlock()
	h.mu.Lock()
	changes, f := h.changes, h.activity
	h.changes = nil
	h.mu.Unlock()
	if f == nil { // SetActivity(nil) after changes were queued
		return
	}
	for _, n := range changes {
		f(n)
	}
}

// Messages returns the subscription's stream. It is closed when the
// subscription is closed or dropped; after it closes, Dropped tells which.
// Messages already buffered when a subscriber is dropped are still
// delivered before the close.
func (s *Subscription) Messages() <-chan Message { return s.ch }

// Dropped reports whether the hub dropped this subscription because its
// buffer was full: the subscriber missed at least one message and should
// resume from the stored history.
func (s *Subscription) Dropped() bool { return s.dropped.Load() }

// Close ends the subscription and closes its Messages channel. It may be
// called more than once, and after the hub dropped the subscription.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	if _, ok := h.subs[s]; !ok {
		h.mu.Unlock()
		return
	}
	delete(h.subs, s)
	close(s.ch)
	h.changedLocked()
	h.mu.Unlock()
	h.notify()
}

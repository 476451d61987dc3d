package correlation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// hub holds this process's waiters, keyed by request id. A wake-up carries
// the terminal record when the process stored it itself, and nothing when it
// only heard of it (a notification from any instance): the waiter then
// re-reads the record, so a lost or duplicated wake-up can never give it a
// wrong answer, only a late or an extra read.
//
// The hub also knows which requests this process created and has not heard
// end: every terminal transition, on any instance, reaches it as a wake-up
// (directly, or by NOTIFY), and a wake-up forgets the id. A long-poll on such
// a request can start waiting without reading the record first. When
// notifications may have been missed (the listener reconnects), it forgets
// them all.
//
// Last, it keeps the terminal records this process stored most recently for
// a short while: a terminal record never changes, so a long-poll that comes
// in just after its reply was stored is answered without a read.
type hub struct {
	mu      sync.Mutex
	waiters map[uuid.UUID]map[chan *Request]struct{}
	open    map[uuid.UUID]struct{}
	n       atomic.Int64 // waiters, readable without the lock

	recent      map[uuid.UUID]recentEntry
	recentOrder []recentEntry // oldest first
	recentBytes int
}

type recentEntry struct {
	id   uuid.UUID
	r    *Request
	at   time.Time
	size int
}

// Bounds on the recent terminal records kept. recentFor is shorter than the
// shortest retention the gateway accepts (a minute), so a record purged by
// another instance has aged out here first; this instance's own purges drop
// theirs at once.
const (
	recentFor      = 30 * time.Second
	maxRecent      = 20_000
	maxRecentBytes = 32 << 20
)

// maxOpen bounds the ids the hub remembers as open (about 50 bytes each).
const maxOpen = 200_000

func newHub() *hub {
	return &hub{
		waiters: make(map[uuid.UUID]map[chan *Request]struct{}),
		open:    make(map[uuid.UUID]struct{}),
		recent:  make(map[uuid.UUID]recentEntry),
	}
}

// remember keeps r, a terminal record, for recentFor. Call with h.mu held.
func (h *hub) remember(r *Request, now time.Time) {
	if _, ok := h.recent[r.ID]; ok {
		return
	}
	size := len(r.Body) + 512
	if r.Reply != nil {
		size += len(r.Reply.Body)
	}
	e := recentEntry{id: r.ID, r: r, at: now, size: size}
	h.recent[r.ID] = e
	h.recentOrder = append(h.recentOrder, e)
	h.recentBytes += size
	drop := 0
	for drop < len(h.recentOrder) {
		e := h.recentOrder[drop]
		if now.Sub(e.at) < recentFor && len(h.recentOrder)-drop <= maxRecent && h.recentBytes <= maxRecentBytes {
			break
		}
		delete(h.recent, e.id)
		h.recentBytes -= e.size
		drop++
	}
	if drop > 0 {
		h.recentOrder = slices.Delete(h.recentOrder, 0, drop)
	}
}

// forgetRecent drops id's kept terminal record (its row was purged). Its
// place in recentOrder stays until it ages out.
func (h *hub) forgetRecent(id uuid.UUID) {
	h.mu.Lock()
	if e, ok := h.recent[id]; ok {
		delete(h.recent, id)
		h.recentBytes -= e.size
		for i := range h.recentOrder {
			if h.recentOrder[i].id == id {
				h.recentOrder[i].size = 0 // already subtracted
				break
			}
		}
	}
	h.mu.Unlock()
}

// recentRecord returns the terminal record of id if this process stored it
// within recentFor.
func (h *hub) recentRecord(id uuid.UUID, now time.Time) *Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.recent[id]
	if !ok || now.Sub(e.at) >= recentFor {
		return nil
	}
	return e.r
}

// opened notes id as open. Call it before the record is committed, so that
// any terminal transition, which can only follow the commit, forgets it.
func (h *hub) opened(id uuid.UUID) {
	h.mu.Lock()
	if len(h.open) < maxOpen {
		h.open[id] = struct{}{}
	}
	h.mu.Unlock()
}

// forget drops id from the open set; it is always safe to.
func (h *hub) forget(id uuid.UUID) {
	h.mu.Lock()
	delete(h.open, id)
	h.mu.Unlock()
}

func (h *hub) isOpen(id uuid.UUID) bool {
	h.mu.Lock()
	_, ok := h.open[id]
	h.mu.Unlock()
	return ok
}

func (h *hub) subscribe(id uuid.UUID) (<-chan *Request, func()) {
	ch := make(chan *Request, 1)
	h.mu.Lock()
	set := h.waiters[id]
	if set == nil {
		set = make(map[chan *Request]struct{})
		h.waiters[id] = set
	}
	set[ch] = struct{}{}
	h.n.Add(1)
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() { h.n.Add(-1) })
		h.mu.Lock()
		delete(set, ch)
		if len(set) == 0 && h.waiters[id] != nil && len(h.waiters[id]) == 0 {
			delete(h.waiters, id)
		}
		h.mu.Unlock()
	}
}

// wake tells id's waiters to re-read their record.
func (h *hub) wake(id uuid.UUID) { h.deliver(id, nil) }

// deliver hands id's waiters its terminal record (nil: re-read it).
func (h *hub) deliver(id uuid.UUID, r *Request) {
	h.mu.Lock()
	delete(h.open, id)
	if r != nil && r.Status.Terminal() {
		h.remember(r, time.Now())
	}
	for ch := range h.waiters[id] {
		signal(ch, r)
	}
	h.mu.Unlock()
}

// wakeAll wakes every waiter, after notifications may have been missed.
func (h *hub) wakeAll() {
	h.mu.Lock()
	clear(h.open)
	for _, set := range h.waiters {
		for ch := range set {
			signal(ch, nil)
		}
	}
	h.mu.Unlock()
}

func (h *hub) count() int { return int(h.n.Load()) }

// signal leaves one pending wake-up on ch; a record replaces a pending
// wake-up without one. Only the hub sends, under its lock.
func signal(ch chan *Request, r *Request) {
	select {
	case ch <- r:
		return
	default:
	}
	if r == nil {
		return // a wake-up is already pending
	}
	select {
	case <-ch:
	default:
	}
	select {
	case ch <- r:
	default:
	}
}

// Waiters reports how many long-polls this process holds.
func (s *Store) Waiters() int { return s.hub.count() }

// Wait returns the request once its status is terminal, or as it is when
// timeout passes. A client that goes away cancels ctx and costs nothing
// more: its subscription is dropped and nothing it would have read is lost.
func (s *Store) Wait(ctx context.Context, id uuid.UUID, timeout time.Duration) (Request, error) {
	r, err := s.waitFor(ctx, id, timeout)
	if r == nil {
		return Request{}, err
	}
	return *r, err // a copy: r may be a record the hub keeps
}

// waitFor is Wait with the record behind a pointer. Long-polls are parked
// in it, and every parked waiter keeps its stack: handled by value, the
// records made its frame alone over 1 KiB, enough to take a waiter's
// goroutine stack from 8 to 16 KiB (BENCHMARKS.md, long-poll scale).
func (s *Store) waitFor(ctx context.Context, id uuid.UUID, timeout time.Duration) (*Request, error) {
	woken, unsubscribe := s.hub.subscribe(id)
	defer unsubscribe()

	if rec := s.hub.recentRecord(id, time.Now()); rec != nil {
		return rec, nil // terminal records never change
	}
	var r *Request
	var err error
	if timeout > 0 && s.hub.isOpen(id) {
		// Created here and not ended since, as of after the subscription:
		// whatever ends it wakes this waiter. No need to read it now.
		r = &Request{ID: id, Status: StatusPending}
	} else {
		r, err = s.read(ctx, id)
		if err != nil || r.Status.Terminal() || timeout <= 0 {
			return r, err
		}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case rec := <-woken:
			if rec != nil && rec.Status.Terminal() {
				return rec, nil
			}
		case <-timer.C:
			return s.read(ctx, id)
		case <-ctx.Done():
			return r, ctx.Err()
		}
		r, err = s.read(ctx, id)
		if err != nil || r.Status.Terminal() {
			return r, err
		}
	}
}

// read is Get returning a pointer, kept out of line so that waitFor's
// frame holds no record.
//
//go:noinline
func (s *Store) read(ctx context.Context, id uuid.UUID) (*Request, error) {
	r, err := s.Get(ctx, id)
	return &r, err
}

// Listen holds a dedicated Postgres connection that LISTENs for terminal
// transitions committed by any instance and wakes the local waiters. It
// reconnects with backoff until ctx ends; after each reconnect it wakes every
// waiter, since notifications sent while it was away are lost. The ready
// callback, when set, is called each time the LISTEN is in place.
func (s *Store) Listen(ctx context.Context, ready func()) error {
	backoff := 100 * time.Millisecond
	for {
		err := s.listenOnce(ctx, ready)
		if ctx.Err() != nil {
			return nil
		}
		s.logger.Warn("notification listener lost its connection; reconnecting", "error", err, "backoff", backoff)
		s.hub.wakeAll()
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context, ready func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connect listener: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Anything committed before LISTEN took effect was not heard.
	s.hub.wakeAll()
	if ready != nil {
		ready()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			return fmt.Errorf("wait for notification: %w", err)
		}
		// One id, or a comma-separated batch of them.
		for payload := range strings.SplitSeq(n.Payload, ",") {
			if id, err := uuid.Parse(payload); err == nil {
				s.hub.wake(id)
			}
		}
	}
}

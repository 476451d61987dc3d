package gateway

import (
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ackBatcher coalesces the acks of one consumer channel. A worker's Ack
// only marks its delivery done; a flusher sends one basic.ack with
// multiple set for the longest run of done deliveries from the oldest
// unsettled one. Handlers finish in group-commit batches, so a burst of
// acks becomes one frame, and for a quorum queue one settle command instead
// of one per message.
//
// Nothing is acked earlier than before: a delivery is marked only after its
// effect is committed, exactly where it was acked. An ack not yet sent when
// the channel dies is lost like an ack frame in flight, and the broker
// redelivers the message, which the stores absorb as a duplicate. Nack and
// Reject go out at once, after the acks held before them. A delivery that
// takes long (one held while Postgres is away) would hold back every ack
// behind it, so done deliveries behind such a gap are acked one by one
// after ackGapWait.
type ackBatcher struct {
	ch amqp.Acknowledger

	mu     sync.Mutex
	next   uint64              // the oldest delivery tag not yet settled at the broker
	done   map[uint64]ackState // settled here, at or above next
	closed bool
	kick   chan struct{}
	exit   chan struct{}
}

type ackState uint8

const (
	ackHeld ackState = iota + 1 // acked by its handler, not yet sent
	ackSent                     // sent on its own (nack, reject, or acked past a gap)
)

// ackGapWait is how long done deliveries wait behind an unsettled older
// one before they are acked one by one.
const ackGapWait = 20 * time.Millisecond

// newAckBatcher starts the flusher of a fresh channel, whose delivery tags
// start at 1.
func newAckBatcher(ch amqp.Acknowledger) *ackBatcher {
	a := &ackBatcher{ch: ch, next: 1, done: map[uint64]ackState{}, kick: make(chan struct{}, 1), exit: make(chan struct{})}
	go a.run()
	return a
}

// Ack marks tag done; the flusher sends it.
func (a *ackBatcher) Ack(tag uint64, multiple bool) error {
	if multiple {
		return a.now(func() error { return a.ch.Ack(tag, true) }, tag, true)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return a.ch.Ack(tag, false)
	}
	a.done[tag] = ackHeld
	select {
	case a.kick <- struct{}{}:
	default:
	}
	return nil
}

// Nack sends at once, after the acks held before it.
func (a *ackBatcher) Nack(tag uint64, multiple, requeue bool) error {
	return a.now(func() error { return a.ch.Nack(tag, multiple, requeue) }, tag, multiple)
}

// Reject sends at once, after the acks held before it.
func (a *ackBatcher) Reject(tag uint64, requeue bool) error {
	return a.now(func() error { return a.ch.Reject(tag, requeue) }, tag, false)
}

// now sends a settlement that cannot wait: first every held ack, so none
// is overtaken or covered by it, then it.
func (a *ackBatcher) now(send func() error, tag uint64, multiple bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return send()
	}
	a.flushLocked(true)
	err := send()
	if multiple {
		for t := a.next; t <= tag; t++ {
			delete(a.done, t)
		}
		a.next = max(a.next, tag+1)
	} else {
		a.done[tag] = ackSent
	}
	a.flushLocked(false)
	return err
}

// flushLocked sends one multiple ack for the run of done deliveries from
// next; with gaps set, it also acks the held deliveries past the first gap
// one by one. It reports whether held acks are left behind a gap.
func (a *ackBatcher) flushLocked(gaps bool) bool {
	var upTo uint64
	for {
		st, ok := a.done[a.next]
		if !ok {
			break
		}
		if st == ackHeld {
			upTo = a.next
		}
		delete(a.done, a.next)
		a.next++
	}
	if upTo != 0 {
		_ = a.ch.Ack(upTo, true) // an error means the channel is gone: the broker redelivers
	}
	waiting := false
	for t, st := range a.done {
		if st != ackHeld {
			continue
		}
		if !gaps {
			waiting = true
			continue
		}
		_ = a.ch.Ack(t, false)
		a.done[t] = ackSent
	}
	return waiting
}

func (a *ackBatcher) run() {
	defer close(a.exit)
	var gap <-chan time.Time
	for {
		select {
		case _, ok := <-a.kick:
			if !ok {
				return
			}
			a.mu.Lock()
			waiting := a.flushLocked(false)
			a.mu.Unlock()
			if waiting && gap == nil {
				gap = time.After(ackGapWait)
			}
		case <-gap:
			gap = nil
			a.mu.Lock()
			a.flushLocked(true)
			a.mu.Unlock()
		}
	}
}

// close sends every held ack and stops the flusher; later calls go
// straight to the channel. Call it before the channel closes.
func (a *ackBatcher) close() {
	a.mu.Lock()
	if !a.closed {
		a.flushLocked(true)
		a.closed = true
		close(a.kick)
	}
	a.mu.Unlock()
	<-a.exit
}

package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Errors a publish can end with.
var (
	// ErrUnroutable means the broker returned the message: no queue is bound
	// for its routing key.
	ErrUnroutable = errors.New("unroutable: no queue bound for the routing key")
	// ErrUnavailable means the broker could not take the message now.
	ErrUnavailable = errors.New("broker unavailable")
	// ErrNacked means the broker refused the message (basic.nack).
	ErrNacked = errors.New("broker nacked the message")
	// ErrConfirmTimeout means no confirm came in time; the message may or
	// may not have been taken.
	ErrConfirmTimeout = errors.New("no publisher confirm in time")
)

// Publisher publishes on one confirm-mode channel with pipelined confirms:
// many goroutines publish concurrently, each waiting only for its own
// confirm.
//
// Returns and confirms are read by one goroutine. The broker sends the
// basic.return of an unroutable mandatory message before its basic.ack, and
// amqp091-go hands both over from its single reader goroutine in that order.
// Because the return channel is unbuffered, the hand-over of a return
// completes only when serve has taken it, so serve always records a return
// before it can see the matching ack, whichever Go channel its select happens
// to look at first.
type Publisher struct {
	confirmTimeout time.Duration
	metrics        *Metrics
	logger         *slog.Logger
	onReady        func()

	pubMu sync.Mutex // serialises sequence numbers and publishes on ch

	mu       sync.Mutex // guards the fields below
	ch       *amqp.Channel
	pending  map[uint64]*pendingPublish
	returned map[string]int // message ids returned but not yet confirmed
}

type pendingPublish struct {
	messageID string
	done      chan error
}

func newPublisher(confirmTimeout time.Duration, metrics *Metrics, logger *slog.Logger) *Publisher {
	return &Publisher{confirmTimeout: confirmTimeout, metrics: metrics, logger: logger}
}

func (p *Publisher) ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ch != nil
}

// serve is the publisher's Worker: it opens a confirm-mode channel and
// resolves confirms and returns until the session ends. Publishes still
// unconfirmed then fail with ErrUnavailable: their requests stay queued and
// are republished, never assumed delivered.
func (p *Publisher) serve(ctx context.Context, conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open publish channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("enable confirms: %w", err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 4096))
	returns := ch.NotifyReturn(make(chan amqp.Return)) // unbuffered: see the type comment
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))

	p.mu.Lock()
	p.ch = ch
	p.pending = make(map[uint64]*pendingPublish)
	p.returned = make(map[string]int)
	p.mu.Unlock()
	if p.onReady != nil {
		p.onReady()
	}
	defer p.detach(ch)

	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-closed:
			if err == nil {
				return errors.New("publish channel closed")
			}
			return fmt.Errorf("publish channel closed: %w", err)
		case r, ok := <-returns:
			if !ok {
				return errors.New("publish channel closed")
			}
			p.mu.Lock()
			p.returned[r.MessageId]++
			p.mu.Unlock()
		case c, ok := <-confirms:
			if !ok {
				return errors.New("publish channel closed")
			}
			p.resolve(c)
		}
	}
}

func (p *Publisher) resolve(c amqp.Confirmation) {
	p.mu.Lock()
	pp := p.pending[c.DeliveryTag]
	delete(p.pending, c.DeliveryTag)
	var result error
	switch {
	case !c.Ack:
		result = ErrNacked
	case pp != nil && p.returned[pp.messageID] > 0:
		result = ErrUnroutable
	}
	if pp != nil && p.returned[pp.messageID] > 0 {
		if p.returned[pp.messageID]--; p.returned[pp.messageID] == 0 {
			delete(p.returned, pp.messageID)
		}
	}
	p.mu.Unlock()
	if pp != nil {
		pp.done <- result // buffered: never blocks
	}
}

// detach fails every publish still waiting on ch.
func (p *Publisher) detach(ch *amqp.Channel) {
	p.mu.Lock()
	pending := p.pending
	p.ch, p.pending, p.returned = nil, nil, nil
	p.mu.Unlock()
	for _, pp := range pending {
		pp.done <- ErrUnavailable
	}
	_ = ch.Close()
}

// Publish publishes msg and waits for the broker's confirm. It returns nil
// once the broker has taken responsibility for the message, ErrUnroutable
// when the broker returned it (only when mandatory), and ErrUnavailable,
// ErrNacked or ErrConfirmTimeout when the caller must try again later.
func (p *Publisher) Publish(ctx context.Context, exchange, key string, mandatory bool, msg amqp.Publishing) error {
	started := time.Now()
	err := p.publish(ctx, exchange, key, mandatory, msg)
	p.metrics.Publishes.WithLabelValues(publishLabel(err)).Inc()
	p.metrics.ConfirmSeconds.Observe(time.Since(started).Seconds())
	return err
}

func (p *Publisher) publish(ctx context.Context, exchange, key string, mandatory bool, msg amqp.Publishing) error {
	pp := &pendingPublish{messageID: msg.MessageId, done: make(chan error, 1)}

	p.pubMu.Lock()
	p.mu.Lock()
	ch := p.ch
	if ch == nil {
		p.mu.Unlock()
		p.pubMu.Unlock()
		return ErrUnavailable
	}
	seq := ch.GetNextPublishSeqNo()
	p.pending[seq] = pp
	p.mu.Unlock()
	err := ch.PublishWithContext(ctx, exchange, key, mandatory, false, msg)
	if err != nil {
		p.mu.Lock()
		if p.ch == ch { // else detach already failed it, and seq may be reused
			delete(p.pending, seq)
		}
		p.mu.Unlock()
	}
	p.pubMu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}

	timer := time.NewTimer(p.confirmTimeout)
	defer timer.Stop()
	select {
	case err := <-pp.done:
		return err
	case <-timer.C:
		return ErrConfirmTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

func publishLabel(err error) string {
	switch {
	case err == nil:
		return "confirmed"
	case errors.Is(err, ErrUnroutable):
		return "returned"
	case errors.Is(err, ErrNacked):
		return "nacked"
	case errors.Is(err, ErrConfirmTimeout):
		return "timeout"
	default:
		return "unavailable"
	}
}

package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Worker runs on one broker connection until ctx ends or the connection
// fails, and returns only when it holds nothing on it any more (a consumer
// has finished its in-flight messages). Returning an error recycles the
// whole connection.
type Worker func(ctx context.Context, conn *amqp.Connection) error

// Connection keeps one AMQP connection up. On every (re)connect it runs
// setup (topology declarations), then starts every worker; when the broker
// closes the connection, or any worker fails, it stops all workers, closes
// the connection and dials again with exponential backoff.
//
// It deliberately does not use amqp091-go's own automatic recovery: that
// recovery cannot resolve publisher confirms that were pending when the
// connection dropped, and delivery tags from the old channel are stale after
// it. Here each session starts clean: the publisher fails its pending
// confirms (those requests stay in the outbox and are republished) and the
// consumers' unacked deliveries are redelivered by the broker.
type Connection struct {
	url              string
	minWait, maxWait time.Duration
	setup            func(*amqp.Connection) error
	workers          []Worker
	metrics          *Metrics
	logger           *slog.Logger
	connected        atomic.Bool
}

// NewConnection returns a connection manager; nothing dials until Run.
func NewConnection(url string, minWait, maxWait time.Duration, metrics *Metrics, logger *slog.Logger,
	setup func(*amqp.Connection) error, workers ...Worker) *Connection {
	return &Connection{url: url, minWait: minWait, maxWait: maxWait, setup: setup, workers: workers, metrics: metrics, logger: logger}
}

// Connected reports whether a session is up.
func (c *Connection) Connected() bool { return c.connected.Load() }

// Run keeps the connection up until ctx ends.
func (c *Connection) Run(ctx context.Context) {
	wait := c.minWait
	first := true
	for ctx.Err() == nil {
		if !first {
			c.metrics.Reconnects.Inc()
		}
		first = false
		started := time.Now()
		err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > c.maxWait {
			wait = c.minWait // it was up for a while: start the backoff afresh
		}
		c.logger.Warn("broker connection lost; reconnecting", "error", err, "backoff", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		wait = min(wait*2, c.maxWait)
	}
}

func (c *Connection) session(ctx context.Context) error {
	conn, err := amqp.DialConfig(c.url, amqp.Config{
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
		Properties: amqp.Table{"connection_name": "switchboard gateway"},
		Dial:       amqp.DefaultDial(5 * time.Second),
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	if err := c.setup(conn); err != nil {
		return err
	}

	sessCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(c.workers))
	for _, w := range c.workers {
		go func() { errs <- w(sessCtx, conn) }()
	}
	c.connected.Store(true)
	c.logger.Info("broker connected")

	var cause error
	running := len(c.workers)
	select {
	case amqpErr := <-closed:
		cause = errors.New("connection closed")
		if amqpErr != nil {
			cause = amqpErr
		}
	case cause = <-errs:
		running--
	case <-ctx.Done():
	}
	c.connected.Store(false)
	cancel()
	for ; running > 0; running-- {
		<-errs
	}
	return cause
}

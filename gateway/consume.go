package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-gw/switchboard/correlation"
)

// consume runs workers that handle deliveries from queue until ctx ends or
// the channel fails. On ctx's end it cancels the consumer and waits for the
// deliveries in hand to be handled; deliveries the broker pushed but no
// worker started are released unacked when the channel closes, and the
// broker redelivers them. handle receives a context that shutdown does not
// cancel, so in-flight work finishes.
func consume(ctx context.Context, conn *amqp.Connection, queue string, prefetch, workers int,
	handle func(ctx, work context.Context, d amqp.Delivery)) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel for %s: %w", queue, err)
	}
	defer ch.Close()
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return fmt.Errorf("set prefetch on %s: %w", queue, err)
	}
	tag := "switchboard-" + uuid.NewString()
	deliveries, err := ch.Consume(queue, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", queue, err)
	}
	work := context.WithoutCancel(ctx)
	acks := newAckBatcher(ch)
	defer acks.close() // before the channel closes: the held acks go out
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range deliveries {
				d.Acknowledger = acks
				handle(ctx, work, d)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-ctx.Done():
		_ = ch.Cancel(tag, false)
		<-done
		return nil
	case <-done:
		return fmt.Errorf("deliveries from %s stopped", queue)
	}
}

// retryStore calls store until it succeeds, the error is not a database
// outage, or ctx ends. While Postgres is away the delivery stays in hand,
// unacked: it is neither lost nor counted as a failed delivery, and the
// consumer's prefetch keeps the broker from pushing more.
func retryStore(ctx context.Context, store func() error, onWait func(error)) error {
	wait := 100 * time.Millisecond
	for {
		err := store()
		if err == nil || !errors.Is(err, correlation.ErrUnavailable) {
			return err
		}
		onWait(err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
		wait = min(wait*2, 5*time.Second)
	}
}

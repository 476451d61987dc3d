// Package groupcommit turns concurrent database writes into group commits:
// calls that arrive while a flush is under way share the next statement and
// its commit. The correlation store batches its hot path with it, and the
// event history its inserts.
package groupcommit

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// A Batcher turns concurrent calls into group commits: calls that arrive
// while a flush is under way queue up and go to the database together in the
// next one, in one statement and one commit. A call that finds a flusher
// free is flushed at once, alone, so a quiet gateway adds no latency; under
// load, batches grow by themselves up to maxBatch. Nothing is acknowledged
// to a caller before its batch has committed.
type Batcher[In, Out any] struct {
	// flush runs one batch and returns one result per input, in order, or
	// one error for the whole batch. A batch the server refuses must have
	// changed nothing (one statement, or one transaction): its calls are
	// then flushed again one by one.
	flush       func(ctx context.Context, in []In) ([]Out, error)
	maxBatch    int
	maxFlushers int           // concurrent flushes, each on its own connection
	timeout     time.Duration // per flush; callers' contexts do not cancel a shared batch

	mu       sync.Mutex
	queue    []*batchCall[In, Out]
	flushing int
}

type batchCall[In, Out any] struct {
	in   In
	out  Out
	err  error
	done chan struct{}
}

// New returns a batcher that flushes at most maxBatch calls at once, with
// at most maxFlushers flushes (each on its own connection) at a time.
func New[In, Out any](maxBatch, maxFlushers int, flush func(context.Context, []In) ([]Out, error)) *Batcher[In, Out] {
	return &Batcher[In, Out]{flush: flush, maxBatch: maxBatch, maxFlushers: maxFlushers, timeout: 30 * time.Second}
}

// Do adds in to the next batch and returns its result once that batch has
// been flushed. A caller whose ctx ends first gets ctx's error; its input
// may still be committed with the batch, exactly as a single statement may
// commit after its caller stopped waiting.
func (b *Batcher[In, Out]) Do(ctx context.Context, in In) (Out, error) {
	c := &batchCall[In, Out]{in: in, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if b.flushing < b.maxFlushers {
		b.flushing++
		go b.run()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.out, c.err
	case <-ctx.Done():
		var zero Out
		return zero, ctx.Err()
	}
}

// run flushes batches until the queue is empty.
func (b *Batcher[In, Out]) run() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.maxBatch)
		if n == 0 {
			b.flushing--
			b.mu.Unlock()
			return
		}
		batch := b.queue[:n:n]
		b.queue = b.queue[n:]
		if len(b.queue) == 0 {
			b.queue = nil // let a long burst's backing array go
		}
		b.mu.Unlock()

		in := make([]In, len(batch))
		for i, c := range batch {
			in[i] = c.in
		}
		out, err := b.flushWithRetries(in)
		if err != nil && len(batch) > 1 && refused(err) {
			// The server refused the statement: one input may be to blame,
			// or the batch as a whole. Each call alone fails only for
			// itself, so one bad input cannot fail the others.
			for _, c := range batch {
				var one []Out
				if one, c.err = b.flushWithRetries([]In{c.in}); c.err == nil {
					c.out = one[0]
				}
				close(c.done)
			}
			continue
		}
		for i, c := range batch {
			if err != nil {
				c.err = err
			} else {
				c.out = out[i]
			}
			close(c.done)
		}
	}
}

func (b *Batcher[In, Out]) flushWithRetries(in []In) ([]Out, error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	out, err := b.flush(ctx, in)
	for attempt := 1; err != nil && retryable(err) && attempt < 3 && ctx.Err() == nil; attempt++ {
		out, err = b.flush(ctx, in) // the statement rolled back whole
	}
	return out, err
}

// refused reports an error the server answered with (a constraint, a bad
// value, a payload too long), as opposed to not being reached at all.
func refused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr)
}

// retryable reports a statement that failed whole and can be run again:
// a deadlock with a statement outside the batches (which all lock rows in
// id order), or a serialization failure.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
)

// The backoff between retries of a transient failure, when the gateway
// says nothing (Retry-After) about when to come back.
const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
)

// callSlack is how much longer than the asked wait a long-poll may take
// before the client gives it up as lost (a dead connection that never
// answers).
const callSlack = 15 * time.Second

// Wait long-polls the request until it ends and answers its final record.
// Waits longer than MaxWait are split into several calls. Transient
// failures (503, 429 honouring Retry-After, connection errors) are retried
// with backoff. timeout bounds the whole wait (0 or less: only ctx does);
// when it passes first, Wait answers the last record read and an error
// wrapping ErrWaitTimeout. When ctx ends it answers the last record read
// and ctx's error.
func (c *Client) Wait(ctx context.Context, id uuid.UUID, timeout time.Duration) (*Record, error) {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	var last *Record
	var backoff time.Duration
	for {
		wait := MaxWait
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return last, fmt.Errorf("wait %s: %w", id, ErrWaitTimeout)
			}
			// Ask for whole seconds no longer than what is left, so the
			// gateway answers by the deadline; under a second, ask for
			// none and poll.
			wait = min(wait, left.Truncate(time.Second))
		}
		began := time.Now()
		rec, err := c.pollOnce(ctx, id, wait)
		switch {
		case err == nil:
			last = rec
			if rec.Terminal() {
				return rec, nil
			}
			if wait >= time.Second && time.Since(began) >= min(wait/2, time.Second) {
				backoff = 0
				continue
			}
			// A zero wait answers at once, and so does a gateway shutting
			// down: pause before the next poll rather than spin.
			backoff = nextBackoff(backoff, nil)
		case ctx.Err() != nil:
			return last, fmt.Errorf("wait %s: %w", id, ctx.Err())
		case !IsTemporary(err):
			return last, fmt.Errorf("wait %s: %w", id, err)
		default:
			backoff = nextBackoff(backoff, err)
		}
		if !deadline.IsZero() {
			backoff = min(backoff, max(time.Until(deadline), 0))
		}
		if err := sleep(ctx, backoff); err != nil {
			return last, fmt.Errorf("wait %s: %w", id, err)
		}
	}
}

// pollOnce makes one long-poll, given up as lost if it outlasts its wait by
// callSlack.
func (c *Client) pollOnce(ctx context.Context, id uuid.UUID, wait time.Duration) (*Record, error) {
	callCtx, cancel := context.WithTimeout(ctx, wait+callSlack)
	defer cancel()
	rec, err := c.get(callCtx, id, wait)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		// The call's own deadline, not the caller's: a lost connection,
		// worth another try.
		return nil, fmt.Errorf("long-poll answered nothing in %s: %w", wait+callSlack, errLostCall)
	}
	return rec, err
}

// errLostCall marks a call that got no answer in time; IsTemporary holds
// it temporary.
var errLostCall = errors.New("client: lost call")

// Do submits a request and waits for its end: the submit asks the gateway
// to hold its answer (Prefer: wait) and, when the request has not ended by
// then, Do goes on with Wait. o.Wait bounds the whole wait (0: only ctx
// does), as Wait's timeout. When o has no MessageID Do makes one, so that
// a submit that fails transiently (503, 429, a connection error) can be
// retried without submitting the request twice.
func (c *Client) Do(ctx context.Context, routingKey string, body any, o *SubmitOptions) (*Record, error) {
	opts := SubmitOptions{}
	if o != nil {
		opts = *o
	}
	total := opts.Wait
	start := time.Now()
	if opts.MessageID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("client: message id: %w", err)
		}
		opts.MessageID = id
	}
	opts.Wait = MaxWait
	if total > 0 {
		opts.Wait = min(total, MaxWait)
	}
	var backoff time.Duration
	for {
		rec, err := c.Submit(ctx, routingKey, body, &opts)
		if err == nil {
			if rec.Terminal() {
				return rec, nil
			}
			timeout := time.Duration(0)
			if total > 0 {
				if timeout = total - time.Since(start); timeout <= 0 {
					return rec, fmt.Errorf("wait %s: %w", rec.ID, ErrWaitTimeout)
				}
			}
			final, err := c.Wait(ctx, rec.ID, timeout)
			if final == nil {
				final = rec
			}
			return final, err
		}
		if ctx.Err() != nil || !IsTemporary(err) {
			return nil, err
		}
		backoff = nextBackoff(backoff, err)
		if total > 0 && time.Since(start)+backoff >= total {
			return nil, err
		}
		if err := sleep(ctx, backoff); err != nil {
			return nil, fmt.Errorf("submit %s: %w", routingKey, err)
		}
	}
}

// nextBackoff is the pause before retrying after err: its Retry-After when
// the gateway sent one, otherwise double the previous pause, with jitter,
// between backoffMin and backoffMax.
func nextBackoff(prev time.Duration, err error) time.Duration {
	if e, ok := AsError(err); ok && e.RetryAfter > 0 {
		return e.RetryAfter
	}
	d := min(max(prev*2, backoffMin), backoffMax)
	// ±20 % so that many clients failed by one outage do not come back
	// in step.
	return d - d/5 + rand.N(2*d/5+1)
}

// sleep pauses for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

package groupcommit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// Each caller gets its own input's result back, whatever batch it rode in,
// and under load the calls share batches.
func TestBatcherGroupsConcurrentCalls(t *testing.T) {
	t.Parallel()
	var flushes, maxSeen atomic.Int64
	release := make(chan struct{})
	b := New(64, 1, func(_ context.Context, in []int) ([]int, error) {
		if flushes.Add(1) == 1 {
			<-release // hold the first flush so the others queue up
		}
		if n := int64(len(in)); n > maxSeen.Load() {
			maxSeen.Store(n)
		}
		out := make([]int, len(in))
		for i, v := range in {
			out[i] = v * 2
		}
		return out, nil
	})

	var wg sync.WaitGroup
	first := make(chan struct{})
	wg.Go(func() {
		close(first)
		got, err := b.Do(context.Background(), -1)
		require.NoError(t, err)
		require.Equal(t, -2, got)
	})
	<-first
	time.Sleep(10 * time.Millisecond)
	const callers = 100
	for i := range callers {
		wg.Go(func() {
			got, err := b.Do(context.Background(), i)
			require.NoError(t, err)
			require.Equal(t, 2*i, got)
		})
	}
	time.Sleep(50 * time.Millisecond) // let them queue behind the held flush
	close(release)
	wg.Wait()
	require.LessOrEqual(t, flushes.Load(), int64(1+(callers+63)/64+2), "queued calls share flushes")
	require.Greater(t, maxSeen.Load(), int64(1))
	require.LessOrEqual(t, maxSeen.Load(), int64(64), "no batch exceeds maxBatch")

	b.mu.Lock()
	defer b.mu.Unlock()
	require.Zero(t, b.flushing, "flushers exit when the queue is empty")
	require.Empty(t, b.queue)
}

// A failed flush fails every call in it, and the next batch starts afresh.
func TestBatcherErrorsFailTheirBatch(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	var fail atomic.Bool
	fail.Store(true)
	b := New(8, 2, func(_ context.Context, in []string) ([]string, error) {
		if fail.Load() {
			return nil, boom
		}
		return in, nil
	})
	_, err := b.Do(context.Background(), "a")
	require.ErrorIs(t, err, boom)
	fail.Store(false)
	got, err := b.Do(context.Background(), "b")
	require.NoError(t, err)
	require.Equal(t, "b", got)
}

// A caller that gives up gets its context's error at once; the batch it
// joined still runs to the end for the others.
func TestBatcherCallerGivesUp(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var flushed atomic.Int64
	b := New(8, 1, func(_ context.Context, in []int) ([]int, error) {
		<-release
		flushed.Add(int64(len(in)))
		return in, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := b.Do(ctx, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(release)
	require.Eventually(t, func() bool { return flushed.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
}

// A batch the server refuses is flushed again call by call, so only the
// call to blame fails.
func TestBatcherIsolatesARefusedInput(t *testing.T) {
	t.Parallel()
	first := make(chan struct{})
	release := make(chan struct{})
	var flushes atomic.Int64
	b := New(8, 1, func(_ context.Context, in []string) ([]string, error) {
		if flushes.Add(1) == 1 {
			close(first)
			<-release // hold the flusher so the others queue up as one batch
		}
		for _, s := range in {
			if s == "bad" {
				return nil, &pgconn.PgError{Code: "22023", Message: "payload string too long"}
			}
		}
		return in, nil
	})
	errs := make(map[string]chan error)
	call := func(s string) {
		done := make(chan error, 1)
		errs[s] = done
		go func() {
			got, err := b.Do(context.Background(), s)
			if err == nil && got != s {
				err = errors.New("wrong result " + got)
			}
			done <- err
		}()
	}
	call("first")
	<-first
	for _, s := range []string{"a", "bad", "b"} {
		call(s)
	}
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == 3
	}, 5*time.Second, time.Millisecond)
	close(release)

	for _, s := range []string{"first", "a", "b"} {
		require.NoError(t, <-errs[s], s)
	}
	var pgErr *pgconn.PgError
	require.ErrorAs(t, <-errs["bad"], &pgErr)
	require.Equal(t, int64(1+1+3), flushes.Load(), "one alone, one batch of three refused, then three alone")
}

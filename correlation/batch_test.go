package correlation

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// Each caller gets its own input's result back, whatever batch it rode in,
// and under load the calls share batches.
func TestBatcherGroupsConcurrentCalls(t *testing.T) {
	t.Parallel()
	var flushes, maxSeen atomic.Int64
	release := make(chan struct{})
	b := newBatcher(64, 1, func(_ context.Context, in []int) ([]int, error) {
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
		got, err := b.do(context.Background(), -1)
		require.NoError(t, err)
		require.Equal(t, -2, got)
	})
	<-first
	time.Sleep(10 * time.Millisecond)
	const callers = 100
	for i := range callers {
		wg.Go(func() {
			got, err := b.do(context.Background(), i)
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
	b := newBatcher(8, 2, func(_ context.Context, in []string) ([]string, error) {
		if fail.Load() {
			return nil, boom
		}
		return in, nil
	})
	_, err := b.do(context.Background(), "a")
	require.ErrorIs(t, err, boom)
	fail.Store(false)
	got, err := b.do(context.Background(), "b")
	require.NoError(t, err)
	require.Equal(t, "b", got)
}

// A caller that gives up gets its context's error at once; the batch it
// joined still runs to the end for the others.
func TestBatcherCallerGivesUp(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var flushed atomic.Int64
	b := newBatcher(8, 1, func(_ context.Context, in []int) ([]int, error) {
		<-release
		flushed.Add(int64(len(in)))
		return in, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := b.do(ctx, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	close(release)
	require.Eventually(t, func() bool { return flushed.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
}

// The open set only ever errs towards reading the record: any wake-up of an
// id, or of everyone, forgets it.
func TestHubForgetsOpenIDsOnEveryWakeUp(t *testing.T) {
	t.Parallel()
	h := newHub()
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{a, b, c} {
		h.opened(id)
	}
	require.True(t, h.isOpen(a))
	h.wake(a)
	require.False(t, h.isOpen(a), "a terminal transition forgets the id")
	h.deliver(b, &Request{ID: b, Status: StatusReplied})
	require.False(t, h.isOpen(b))
	require.True(t, h.isOpen(c))
	h.wakeAll()
	require.False(t, h.isOpen(c), "missed notifications forget every id")
}

// Terminal records delivered to the hub are kept for a short while, within
// bounds on count and age; open ones are not kept at all.
func TestHubKeepsRecentTerminalRecords(t *testing.T) {
	t.Parallel()
	h := newHub()
	now := time.Now()
	open := &Request{ID: uuid.New(), Status: StatusPending}
	h.deliver(open.ID, open)
	require.Nil(t, h.recentRecord(open.ID, now), "an open record may still change")

	done := &Request{ID: uuid.New(), Status: StatusReplied, Reply: &Reply{Body: []byte(`{}`)}}
	h.deliver(done.ID, done)
	require.Same(t, done, h.recentRecord(done.ID, now))
	require.Nil(t, h.recentRecord(done.ID, time.Now().Add(recentFor)), "kept for recentFor only")

	h.mu.Lock()
	for range maxRecent {
		r := &Request{ID: uuid.New(), Status: StatusExpired}
		h.remember(r, now)
	}
	h.mu.Unlock()
	require.Nil(t, h.recentRecord(done.ID, now), "the oldest goes first past maxRecent")
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Len(t, h.recent, maxRecent)
	require.Len(t, h.recentOrder, maxRecent)
}

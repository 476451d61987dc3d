package auth

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestLimiter(defaults Limits, lookup func(context.Context, uuid.UUID) (Limits, bool)) (*Limiter, *fakeClock) {
	clock := &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := NewLimiter(defaults, lookup)
	l.now = clock.now
	return l, clock
}

// allowed counts how many of n calls in a row pass.
func allowed(l *Limiter, project uuid.UUID, n int) int {
	got := 0
	for range n {
		if ok, _ := l.Allow(context.Background(), project); ok {
			got++
		}
	}
	return got
}

func TestLimiterBurstThenRefill(t *testing.T) {
	t.Parallel()
	l, clock := newTestLimiter(Limits{RPS: 2, Burst: 5}, nil)
	p := uuid.New()
	require.Equal(t, 5, allowed(l, p, 10), "a full bucket lets the burst through, no more")

	ok, retry := l.Allow(context.Background(), p)
	require.False(t, ok)
	require.Equal(t, 500*time.Millisecond, retry, "one token every 1/RPS")

	clock.advance(499 * time.Millisecond)
	ok, retry = l.Allow(context.Background(), p)
	require.False(t, ok)
	require.InDelta(t, time.Millisecond, retry, float64(time.Microsecond))

	clock.advance(2 * time.Millisecond)
	require.Equal(t, 1, allowed(l, p, 3))

	clock.advance(time.Second)
	require.Equal(t, 2, allowed(l, p, 3), "RPS tokens a second")

	clock.advance(time.Hour)
	require.Equal(t, 5, allowed(l, p, 10), "never more than the burst, however long idle")

	require.Equal(t, 5+1+1+2+1+5, int(testutil.ToFloat64(l.limited.WithLabelValues("rate"))))
	require.Zero(t, testutil.ToFloat64(l.limited.WithLabelValues("waiters")))
}

func TestLimiterDefaultBurstAndUnlimited(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(Limits{RPS: 2.5}, nil)
	require.Equal(t, 3, allowed(l, uuid.New(), 10), "no burst: ceil(RPS)")

	l, _ = newTestLimiter(Limits{RPS: 0.1}, nil)
	require.Equal(t, 1, allowed(l, uuid.New(), 10), "a burst of at least one")

	l, _ = newTestLimiter(Limits{}, nil)
	require.Equal(t, 1000, allowed(l, uuid.New(), 1000), "no RPS: no limit")
	release, ok := l.Acquire(context.Background(), uuid.New())
	require.True(t, ok)
	release()
}

func TestLimiterIsolatesProjects(t *testing.T) {
	t.Parallel()
	l, _ := newTestLimiter(Limits{RPS: 1, Burst: 3, MaxWaiters: 1}, nil)
	a, b := uuid.New(), uuid.New()
	require.Equal(t, 3, allowed(l, a, 10))
	require.Equal(t, 3, allowed(l, b, 10), "a's exhausted bucket does not touch b's")

	releaseA, ok := l.Acquire(context.Background(), a)
	require.True(t, ok)
	defer releaseA()
	releaseB, ok := l.Acquire(context.Background(), b)
	require.True(t, ok, "a's waiter does not count against b")
	defer releaseB()
}

func TestLimiterWaiters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _ := newTestLimiter(Limits{MaxWaiters: 2}, nil)
	p := uuid.New()
	r1, ok := l.Acquire(ctx, p)
	require.True(t, ok)
	r2, ok := l.Acquire(ctx, p)
	require.True(t, ok)
	r3, ok := l.Acquire(ctx, p)
	require.False(t, ok)
	require.NotNil(t, r3)
	r3() // harmless: it holds nothing
	_, ok = l.Acquire(ctx, p)
	require.False(t, ok, "a refused acquire's release frees nothing")
	require.Equal(t, 2, int(testutil.ToFloat64(l.limited.WithLabelValues("waiters"))))

	r1()
	r1() // a second release frees nothing more
	r4, ok := l.Acquire(ctx, p)
	require.True(t, ok, "a released waiter makes room")
	_, ok = l.Acquire(ctx, p)
	require.False(t, ok, "releasing twice freed one place only")

	r2()
	r4()
	l.mu.Lock()
	require.Empty(t, l.waiters, "a project with no waiter keeps no counter")
	l.mu.Unlock()
}

func TestLimiterWaitersConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l, _ := newTestLimiter(Limits{MaxWaiters: 5}, nil)
	p := uuid.New()
	var mu sync.Mutex
	held, peak := 0, 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 100 {
				release, ok := l.Acquire(ctx, p)
				if !ok {
					continue
				}
				mu.Lock()
				held++
				peak = max(peak, held)
				mu.Unlock()
				mu.Lock()
				held--
				mu.Unlock()
				release()
			}
		})
	}
	wg.Wait()
	require.LessOrEqual(t, peak, 5)
	_, ok := l.Acquire(ctx, p)
	require.True(t, ok)
}

func TestLimiterOverrides(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	vip, capped, plain := uuid.New(), uuid.New(), uuid.New()
	lookup := func(_ context.Context, p uuid.UUID) (Limits, bool) {
		switch p {
		case vip:
			return Limits{RPS: 100, Burst: 50}, true
		case capped:
			return Limits{MaxWaiters: 1}, true // rate: the defaults
		}
		return Limits{}, false
	}
	l, _ := newTestLimiter(Limits{RPS: 1, Burst: 2, MaxWaiters: 3}, lookup)
	require.Equal(t, 50, allowed(l, vip, 100))
	require.Equal(t, 2, allowed(l, capped, 100))
	require.Equal(t, 2, allowed(l, plain, 100))

	_, ok := l.Acquire(ctx, capped)
	require.True(t, ok)
	_, ok = l.Acquire(ctx, capped)
	require.False(t, ok)
	for range 3 {
		_, ok = l.Acquire(ctx, vip)
		require.True(t, ok, "vip keeps the default MaxWaiters")
	}
	_, ok = l.Acquire(ctx, vip)
	require.False(t, ok)
}

// A project's bucket goes once it has refilled: a full bucket and none
// behave alike, so memory follows the active projects only.
func TestLimiterDropsIdleBuckets(t *testing.T) {
	t.Parallel()
	l, clock := newTestLimiter(Limits{RPS: 0.1, Burst: 10}, nil)
	for range 100 {
		allowed(l, uuid.New(), 1)
	}
	busy := uuid.New()
	require.Equal(t, 10, allowed(l, busy, 20))
	clock.advance(sweepEvery - time.Second) // the others refill in 10 s, busy in 100 s
	clock.advance(time.Second)
	require.Equal(t, 1, allowed(l, busy, 1)) // sweeps; busy holds 6 tokens, 5 left
	l.mu.Lock()
	require.Len(t, l.buckets, 1)
	l.mu.Unlock()
	require.Equal(t, 5, allowed(l, busy, 10), "busy kept its state")
}

func TestProjectLimitsReadsAndCaches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testsvc.Database(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	vip, plain := uuid.New(), uuid.New()
	_, err = pool.Exec(ctx, `INSERT INTO projects (id, name, rate_rps, rate_burst, max_waiters) VALUES
		($1, 'vip', 7.5, 20, NULL), ($2, 'plain', NULL, NULL, NULL)`, vip, plain)
	require.NoError(t, err)

	clock := &fakeClock{t: time.Now()}
	c := &limitsCache{pool: pool, now: clock.now, entries: map[uuid.UUID]limitsEntry{}}
	got, ok := c.get(ctx, vip)
	require.True(t, ok)
	require.Equal(t, Limits{RPS: 7.5, Burst: 20}, got)
	got, ok = c.get(ctx, plain)
	require.True(t, ok)
	require.Equal(t, Limits{}, got)
	_, ok = c.get(ctx, uuid.New())
	require.False(t, ok)

	_, err = pool.Exec(ctx, `UPDATE projects SET rate_rps = 1, max_waiters = 4 WHERE id = $1`, vip)
	require.NoError(t, err)
	got, _ = c.get(ctx, vip)
	require.Equal(t, Limits{RPS: 7.5, Burst: 20}, got, "cached")
	clock.advance(projectLimitsTTL)
	got, _ = c.get(ctx, vip)
	require.Equal(t, Limits{RPS: 1, Burst: 20, MaxWaiters: 4}, got, "read again once stale")

	// The database gone, the last answer stands.
	pool.Close()
	clock.advance(projectLimitsTTL)
	got, ok = c.get(ctx, vip)
	require.True(t, ok)
	require.Equal(t, Limits{RPS: 1, Burst: 20, MaxWaiters: 4}, got)

	// Through the limiter: the vip's burst of 20 applies over the defaults.
	l := NewLimiter(Limits{RPS: 1, Burst: 1}, c.get)
	require.Equal(t, 20, allowed(l, vip, 30))
	require.Equal(t, 1, allowed(l, uuid.New(), 30))
}

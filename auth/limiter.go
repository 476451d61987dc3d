package auth

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Limits bound what one project may ask of the gateway. A zero field means
// "no limit" in the gateway's defaults, and "the default" in a project's
// overrides.
type Limits struct {
	// RPS is the sustained rate of requests per second; Burst how many may
	// come at once (at least 1; 0 means ceil(RPS)).
	RPS   float64
	Burst int
	// MaxWaiters is how many long-polls and event streams the project may
	// hold open at once.
	MaxWaiters int
}

// over returns l with every non-zero field of o replacing its own.
func (l Limits) over(o Limits) Limits {
	if o.RPS > 0 {
		l.RPS = o.RPS
	}
	if o.Burst > 0 {
		l.Burst = o.Burst
	}
	if o.MaxWaiters > 0 {
		l.MaxWaiters = o.MaxWaiters
	}
	return l
}

func (l Limits) burst() float64 {
	if l.Burst > 0 {
		return float64(l.Burst)
	}
	return math.Max(1, math.Ceil(l.RPS))
}

// Limiter enforces each project's Limits: a token bucket for the request
// rate and a count of open long-polls and streams. Its state lives in this
// process, so the limits hold per instance: behind N instances a project
// gets up to N times its rate. Memory stays bounded: the bucket of a project
// that has been idle long enough to refill is dropped (a full bucket and no
// bucket behave alike), and a project with no open waiter has no counter.
type Limiter struct {
	defaults Limits
	lookup   func(ctx context.Context, project uuid.UUID) (Limits, bool)
	now      func() time.Time // a clock tests can set

	mu        sync.Mutex
	buckets   map[uuid.UUID]*bucket
	waiters   map[uuid.UUID]int
	lastSweep time.Time

	limited *prometheus.CounterVec
}

type bucket struct {
	tokens float64
	last   time.Time
	full   time.Time // when the bucket will be full again if left alone
}

// sweepEvery is how often Allow drops the buckets of idle projects.
const sweepEvery = time.Minute

// NewLimiter returns a Limiter applying defaults to every project, with the
// overrides lookup returns when it returns true (lookup may be nil).
func NewLimiter(defaults Limits, lookup func(ctx context.Context, project uuid.UUID) (Limits, bool)) *Limiter {
	l := &Limiter{
		defaults: defaults,
		lookup:   lookup,
		now:      time.Now,
		buckets:  map[uuid.UUID]*bucket{},
		waiters:  map[uuid.UUID]int{},
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_rate_limited_total",
			Help: "Calls refused with 429 by a project's limits, by kind: rate (requests per second) or waiters (open long-polls and streams).",
		}, []string{"kind"}),
	}
	// Both series exist from the start, so a rate() over them works at 0.
	l.limited.WithLabelValues("rate")
	l.limited.WithLabelValues("waiters")
	return l
}

// Collectors returns the limiter's metrics, for a Prometheus registry.
func (l *Limiter) Collectors() []prometheus.Collector {
	return []prometheus.Collector{l.limited}
}

func (l *Limiter) limits(ctx context.Context, project uuid.UUID) Limits {
	if l.lookup == nil {
		return l.defaults
	}
	if o, ok := l.lookup(ctx, project); ok {
		return l.defaults.over(o)
	}
	return l.defaults
}

// Allow takes one request from project's bucket. When the bucket is empty
// it answers false and how long until a request would be allowed, for the
// Retry-After header (round it up to whole seconds).
func (l *Limiter) Allow(ctx context.Context, project uuid.UUID) (ok bool, retryAfter time.Duration) {
	lim := l.limits(ctx, project)
	if lim.RPS <= 0 {
		return true, 0
	}
	burst := lim.burst()
	now := l.now()

	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[project]
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		l.buckets[project] = b
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens += elapsed.Seconds() * lim.RPS
		b.last = now
	}
	// Limits may have shrunk since the bucket filled.
	b.tokens = math.Min(b.tokens, burst)
	ok = b.tokens >= 1
	if ok {
		b.tokens--
	}
	b.full = now.Add(seconds((burst - b.tokens) / lim.RPS))
	if ok {
		return true, 0
	}
	l.limited.WithLabelValues("rate").Inc()
	return false, seconds((1 - b.tokens) / lim.RPS)
}

// sweep drops the buckets that have refilled; l.mu is held.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < sweepEvery {
		return
	}
	l.lastSweep = now
	for p, b := range l.buckets {
		if !now.Before(b.full) {
			delete(l.buckets, p)
		}
	}
}

// Acquire counts one more open long-poll or stream for project. When the
// project holds its MaxWaiters already it answers false; otherwise the
// caller must call release once the wait ends (calling it again is
// harmless). release is never nil, so it can be deferred either way.
func (l *Limiter) Acquire(ctx context.Context, project uuid.UUID) (release func(), ok bool) {
	lim := l.limits(ctx, project)
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim.MaxWaiters > 0 && l.waiters[project] >= lim.MaxWaiters {
		l.limited.WithLabelValues("waiters").Inc()
		return func() {}, false
	}
	l.waiters[project]++
	return sync.OnceFunc(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.waiters[project]--; l.waiters[project] <= 0 {
			delete(l.waiters, project)
		}
	}), true
}

func seconds(s float64) time.Duration {
	return time.Duration(math.Ceil(s * float64(time.Second)))
}

// projectLimitsTTL is how long ProjectLimits trusts what it read: a change
// to a project's limits takes effect within it.
const projectLimitsTTL = 30 * time.Second

// ProjectLimits returns a lookup for NewLimiter reading each project's
// overrides (the projects columns rate_rps, rate_burst and max_waiters;
// NULL: the default), remembered for 30 s so the database is not asked on
// every call. When the database cannot answer, the last answer stands (or
// the defaults, if there is none) and it is asked again a few seconds later.
func ProjectLimits(pool *pgxpool.Pool) func(ctx context.Context, project uuid.UUID) (Limits, bool) {
	c := &limitsCache{pool: pool, now: time.Now, entries: map[uuid.UUID]limitsEntry{}}
	return c.get
}

type limitsCache struct {
	pool *pgxpool.Pool
	now  func() time.Time

	mu        sync.Mutex
	entries   map[uuid.UUID]limitsEntry
	lastSweep time.Time
}

type limitsEntry struct {
	limits  Limits
	found   bool
	expires time.Time
}

// limitsRetry is how soon a lookup the database failed is tried again.
const limitsRetry = 5 * time.Second

func (c *limitsCache) get(ctx context.Context, project uuid.UUID) (Limits, bool) {
	now := c.now()
	c.mu.Lock()
	e, cached := c.entries[project]
	c.mu.Unlock()
	if cached && now.Before(e.expires) {
		return e.limits, e.found
	}

	var rps *float64
	var burst, waiters *int32
	err := c.pool.QueryRow(ctx, `SELECT rate_rps, rate_burst, max_waiters FROM projects WHERE id = $1`, project).
		Scan(&rps, &burst, &waiters)
	switch {
	case err == nil:
		e = limitsEntry{found: true, expires: now.Add(projectLimitsTTL)}
		if rps != nil {
			e.limits.RPS = *rps
		}
		if burst != nil {
			e.limits.Burst = int(*burst)
		}
		if waiters != nil {
			e.limits.MaxWaiters = int(*waiters)
		}
	case errors.Is(err, pgx.ErrNoRows):
		e = limitsEntry{expires: now.Add(projectLimitsTTL)}
	case ctx.Err() != nil:
		// The caller gave up; that says nothing about the database.
		return e.limits, e.found
	default:
		e.expires = now.Add(limitsRetry)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[project] = e
	if now.Sub(c.lastSweep) >= projectLimitsTTL {
		c.lastSweep = now
		for p, old := range c.entries {
			if !now.Before(old.expires) {
				delete(c.entries, p)
			}
		}
	}
	return e.limits, e.found
}

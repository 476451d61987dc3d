package main

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-gw/switchboard/api"
	"github.com/switchboard-gw/switchboard/correlation"
)

// registerMetrics adds to reg what serve exposes beyond the components' own
// instruments: the HTTP calls and event streams of srv, the database pool,
// and the open requests.
func registerMetrics(reg prometheus.Registerer, pool *pgxpool.Pool, store *correlation.Store, srv *api.Server) {
	srv.SetMetrics(api.NewMetrics(reg))
	reg.MustRegister(newPoolCollector(pool), newOpenRequestsCollector(store, openRequestsTTL))
}

// poolCollector reads pgxpool's statistics at scrape time.
type poolCollector struct {
	pool *pgxpool.Pool

	conns, maxConns, acquires, acquireWait, emptyAcquires, emptyAcquireWait, canceledAcquires *prometheus.Desc
}

func newPoolCollector(pool *pgxpool.Pool) *poolCollector {
	return &poolCollector{
		pool: pool,
		conns: prometheus.NewDesc("switchboard_db_pool_connections",
			"Postgres pool connections, by state (acquired, idle, constructing).", []string{"state"}, nil),
		maxConns: prometheus.NewDesc("switchboard_db_pool_max_connections",
			"Most connections the Postgres pool opens (SWITCHBOARD_DB_MAX_CONNS).", nil, nil),
		acquires: prometheus.NewDesc("switchboard_db_pool_acquires_total",
			"Connections acquired from the Postgres pool.", nil, nil),
		acquireWait: prometheus.NewDesc("switchboard_db_pool_acquire_wait_seconds_total",
			"Time spent acquiring connections from the Postgres pool, summed over successful acquires.", nil, nil),
		emptyAcquires: prometheus.NewDesc("switchboard_db_pool_empty_acquires_total",
			"Acquires that found no idle connection and waited for one to be released or opened.", nil, nil),
		emptyAcquireWait: prometheus.NewDesc("switchboard_db_pool_empty_acquire_wait_seconds_total",
			"Time acquires waited because the pool had no idle connection: a rising rate means the pool is too small.", nil, nil),
		canceledAcquires: prometheus.NewDesc("switchboard_db_pool_canceled_acquires_total",
			"Acquires given up because their context ended first.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.maxConns, c.acquires, c.acquireWait,
		c.emptyAcquires, c.emptyAcquireWait, c.canceledAcquires} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pool.Stat()
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	ch <- prometheus.MustNewConstMetric(c.conns, gauge, float64(st.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(c.conns, gauge, float64(st.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(c.conns, gauge, float64(st.ConstructingConns()), "constructing")
	ch <- prometheus.MustNewConstMetric(c.maxConns, gauge, float64(st.MaxConns()))
	ch <- prometheus.MustNewConstMetric(c.acquires, counter, float64(st.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.acquireWait, counter, st.AcquireDuration().Seconds())
	ch <- prometheus.MustNewConstMetric(c.emptyAcquires, counter, float64(st.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.emptyAcquireWait, counter, st.EmptyAcquireWaitTime().Seconds())
	ch <- prometheus.MustNewConstMetric(c.canceledAcquires, counter, float64(st.CanceledAcquireCount()))
}

// openRequestsTTL is how long a count of the open requests is reused, so
// that several Prometheus servers scraping often cost one query each time.
const openRequestsTTL = 5 * time.Second

// openRequestsCollector counts the open requests by status in Postgres, at
// most once per ttl.
type openRequestsCollector struct {
	store *correlation.Store
	ttl   time.Duration
	desc  *prometheus.Desc

	mu     sync.Mutex
	at     time.Time
	counts map[correlation.Status]int
}

func newOpenRequestsCollector(store *correlation.Store, ttl time.Duration) *openRequestsCollector {
	return &openRequestsCollector{store: store, ttl: ttl,
		desc: prometheus.NewDesc("switchboard_open_requests",
			"Open requests in the correlation store, across all instances, by status (queued: not yet confirmed by the broker; "+
				"pending: waiting for a reply). Counted over the open rows only (a partial index holds them) and cached for 5s; "+
				"absent while Postgres cannot be reached.",
			[]string{"status"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *openRequestsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *openRequestsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil || time.Since(c.at) >= c.ttl {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		counts, err := c.store.OpenCounts(ctx)
		if err != nil {
			c.counts = nil // no stale numbers; readyz says why
			return
		}
		c.counts, c.at = counts, time.Now()
	}
	for status, n := range c.counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(status))
	}
}

package rules

import "github.com/prometheus/client_golang/prometheus"

// Collector exposes the engine's per-rule counts and the runner's reload
// state to Prometheus, read at scrape time. Rule names are bounded by the
// rule files, so they make a bounded label.
type Collector struct {
	engine *Engine
	runner *Runner

	matches, actionsOK, failures, reloads, reloadFailures, reloadError *prometheus.Desc
}

// NewCollector returns the collector of engine and runner (runner may be
// nil).
func NewCollector(engine *Engine, runner *Runner) *Collector {
	return &Collector{
		engine: engine, runner: runner,
		matches: prometheus.NewDesc("switchboard_rule_matches_total",
			"Events whose rule condition held, by rule.", []string{"rule"}, nil),
		actionsOK: prometheus.NewDesc("switchboard_rule_actions_total",
			"Rule actions that succeeded, by rule.", []string{"rule"}, nil),
		failures: prometheus.NewDesc("switchboard_rule_failures_total",
			"Rule failures (actions failed after retries, condition errors, events past the hop limit), by rule; each left a dead letter.",
			[]string{"rule"}, nil),
		reloads: prometheus.NewDesc("switchboard_rule_reloads_total",
			"Rule set reloads that took effect.", nil, nil),
		reloadFailures: prometheus.NewDesc("switchboard_rule_reload_failures_total",
			"Rule set reloads refused (the last good set kept running).", nil, nil),
		reloadError: prometheus.NewDesc("switchboard_rule_reload_error",
			"1 while the rule files on disk do not load (the last good set is running), else 0.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.matches, c.actionsOK, c.failures, c.reloads, c.reloadFailures, c.reloadError} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.engine.Rules() {
		ch <- prometheus.MustNewConstMetric(c.matches, prometheus.CounterValue, float64(r.Matches), r.Name)
		ch <- prometheus.MustNewConstMetric(c.actionsOK, prometheus.CounterValue, float64(r.ActionsOK), r.Name)
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(r.Failures), r.Name)
	}
	if c.runner == nil {
		return
	}
	st := c.runner.Status()
	ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue, float64(st.Reloads))
	ch <- prometheus.MustNewConstMetric(c.reloadFailures, prometheus.CounterValue, float64(st.ReloadFailures))
	failing := 0.0
	if st.LastError != "" {
		failing = 1
	}
	ch <- prometheus.MustNewConstMetric(c.reloadError, prometheus.GaugeValue, failing)
}

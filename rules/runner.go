package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	amqp "github.com/rabbitmq/amqp091-go"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Dir holds the rule files (*.yaml, *.yml), loaded as one set.
	Dir string
	// AMQPURL is the broker of the AMQP sources.
	AMQPURL string
	// QueuePrefix names the AMQP sources' durable queues,
	// <QueuePrefix>.<source name>; default DefaultQueuePrefix.
	QueuePrefix string
	// DeadLetterExchange, when set, is the dead-letter exchange of the AMQP
	// sources' queues.
	DeadLetterExchange string
	// Prefetch is how many events each AMQP source holds and hands to the
	// engine at once; default 8.
	Prefetch int
	// Settle is how long a directory source waits for a new file to stop
	// changing before it reports it finished; default DefaultSettle.
	Settle time.Duration
	// Watch reloads the rule set when files in Dir change, once the
	// directory has been quiet for Debounce (default 500ms).
	Watch    bool
	Debounce time.Duration
	// Signals, when set, reloads the rule set on every value received
	// (serve passes SIGHUP here: signal.Notify(ch, syscall.SIGHUP)).
	Signals <-chan os.Signal
	// RestartMin and RestartMax bound the backoff before a failed source
	// (e.g. its directory is missing, its UDP port taken) is started again.
	RestartMin, RestartMax time.Duration
	// Firings reads recent firings for GET /rules/{name}/firings; without
	// it that endpoint answers 503.
	Firings FiringReader
	// Reloaded, when set, hears about every reload after the first load:
	// the files of the set in use, and the error of a refused reload. serve
	// audits them.
	Reloaded func(files []string, err error)
}

// DefaultRunnerConfig returns a configuration that watches dir and works
// against RabbitMQ on its standard local port.
func DefaultRunnerConfig(dir string) RunnerConfig {
	return RunnerConfig{
		Dir:         dir,
		AMQPURL:     "amqp://guest:guest@127.0.0.1:5672/",
		QueuePrefix: DefaultQueuePrefix,
		Prefetch:    8,
		Settle:      DefaultSettle,
		Watch:       true,
		Debounce:    500 * time.Millisecond,
		RestartMin:  time.Second,
		RestartMax:  30 * time.Second,
	}
}

// Validate checks the configuration.
func (c RunnerConfig) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("rules: the rule directory is required"))
	}
	if c.Prefetch < 0 || c.Settle < 0 || c.Debounce < 0 || c.RestartMin < 0 || c.RestartMax < 0 {
		errs = append(errs, errors.New("rules: prefetch, settle, debounce and restart backoff must not be negative"))
	}
	return errors.Join(errs...)
}

func (c RunnerConfig) withDefaults() RunnerConfig {
	if c.QueuePrefix == "" {
		c.QueuePrefix = DefaultQueuePrefix
	}
	if c.Settle == 0 {
		c.Settle = DefaultSettle
	}
	if c.Debounce == 0 {
		c.Debounce = 500 * time.Millisecond
	}
	if c.RestartMin == 0 {
		c.RestartMin = time.Second
	}
	if c.RestartMax < c.RestartMin {
		c.RestartMax = max(30*time.Second, c.RestartMin)
	}
	return c
}

// Runner runs a rule set: it loads the rule directory into the engine,
// runs every source the set configures with the engine as handler, and
// reloads on SIGHUP, on Reload and (with Watch) when the files change.
//
// A reload that fails to load (a bad edit) changes nothing: the last good
// set keeps running, and the error is logged, counted and reported by
// Status until a reload succeeds. A good reload swaps the engine's set and
// restarts only the sources whose configuration changed; the others keep
// running, so no event is dropped on their account. A changed AMQP source
// keeps its queue (its name does not change), so its events wait there
// while it restarts.
type Runner struct {
	cfg    RunnerConfig
	engine *Engine
	logger *slog.Logger

	// reloadMu serializes reloads.
	reloadMu sync.Mutex
	runCtx   context.Context // set by Run; nil before
	// loaded is closed once Run has applied the first rule set.
	loaded chan struct{}

	mu             sync.RWMutex
	sources        map[string]*runningSource
	lastErr        error
	lastReload     time.Time
	reloads        int64
	reloadFailures int64
}

// runningSource is one started source.
type runningSource struct {
	cfg    SourceConfig // File cleared: moving a source between files changes nothing
	src    Source
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	err      error // of its last run
	restarts int
}

// NewRunner returns a runner of the rule files in cfg.Dir over engine.
// Nothing is loaded until Run.
func NewRunner(cfg RunnerConfig, engine *Engine, logger *slog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Runner{cfg: cfg.withDefaults(), engine: engine, logger: logger, sources: map[string]*runningSource{},
		loaded: make(chan struct{})}, nil
}

// Loaded is closed once Run has loaded the rule set and started its
// sources: from then on hooks are registered and the engine has its rules.
// serve waits for it (or for Run's error) before it takes HTTP requests.
func (r *Runner) Loaded() <-chan struct{} { return r.loaded }

// Run loads the rule set, starts its sources and keeps them running until
// ctx ends; then it stops every source (each finishes the events in hand)
// and returns nil. It fails at once when the first load fails: there is no
// good set to fall back to.
func (r *Runner) Run(ctx context.Context) error {
	// Watch before the first load, so an edit made while it loads is not
	// missed.
	var changes <-chan fsnotify.Event
	var watchErrs <-chan error
	if r.cfg.Watch {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			return fmt.Errorf("watch rule directory: %w", err)
		}
		defer w.Close()
		if err := w.Add(r.cfg.Dir); err != nil {
			return fmt.Errorf("watch rule directory: %w", err)
		}
		changes, watchErrs = w.Events, w.Errors
	}

	r.reloadMu.Lock()
	if r.runCtx != nil {
		r.reloadMu.Unlock()
		return errors.New("rules: runner already running")
	}
	set, err := LoadDir(r.cfg.Dir)
	if err != nil {
		r.reloadMu.Unlock()
		return fmt.Errorf("load rules: %w", err)
	}
	r.runCtx = ctx
	r.apply(set)
	close(r.loaded)
	r.reloadMu.Unlock()
	r.logger.Info("rules loaded", "dir", r.cfg.Dir, "files", len(set.Files), "rules", len(set.Rules), "sources", len(set.Sources))
	defer r.stopAll()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case sig, ok := <-r.cfg.Signals:
			if !ok {
				r.cfg.Signals = nil
				continue
			}
			r.logger.Info("reloading rules", "signal", sig.String())
			_ = r.Reload()
		case e := <-changes:
			if e.Op == fsnotify.Chmod {
				continue
			}
			// Editors write, rename and remove in bursts: reload once
			// the directory is quiet.
			debounce.Reset(r.cfg.Debounce)
		case err := <-watchErrs:
			r.logger.Warn("rule directory watch error; changes may be missed (SIGHUP reloads)", "error", err)
		case <-debounce.C:
			r.logger.Info("rule files changed; reloading")
			_ = r.Reload()
		}
	}
}

// Reload loads the rule directory again. On success the engine runs the new
// set and only changed sources are restarted; on failure the running set is
// kept and the error, also kept for Status, is returned.
func (r *Runner) Reload() error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	if r.runCtx == nil || r.runCtx.Err() != nil {
		return errors.New("rules: runner is not running")
	}
	set, err := LoadDir(r.cfg.Dir)
	if err != nil {
		r.mu.Lock()
		r.lastErr, r.reloadFailures = err, r.reloadFailures+1
		r.mu.Unlock()
		r.logger.Error("rule reload failed; the last good rule set keeps running", "error", err)
		if r.cfg.Reloaded != nil {
			r.cfg.Reloaded(r.engine.Set().Files, err)
		}
		return err
	}
	r.apply(set)
	r.logger.Info("rules reloaded", "files", len(set.Files), "rules", len(set.Rules), "sources", len(set.Sources))
	if r.cfg.Reloaded != nil {
		r.cfg.Reloaded(set.Files, nil)
	}
	return nil
}

// apply makes set the running one. Sources that went away or changed are
// stopped first, so their events in hand finish under the rules they came
// for; then the engine swaps sets; then new and changed sources start.
// Called with reloadMu held.
func (r *Runner) apply(set *Set) {
	r.mu.RLock()
	old := make(map[string]*runningSource, len(r.sources))
	for name, rs := range r.sources {
		old[name] = rs
	}
	r.mu.RUnlock()

	keep := map[string]*runningSource{}
	var start []SourceConfig
	for name, sc := range set.Sources {
		sc.Name, sc.File = name, ""
		if rs, ok := old[name]; ok && reflect.DeepEqual(rs.cfg, sc) {
			keep[name] = rs
			continue
		}
		start = append(start, sc)
	}
	var staleOf = map[string][]amqpBinding{}
	for name, rs := range old {
		if _, ok := keep[name]; ok {
			continue
		}
		rs.cancel()
		<-rs.done
		r.logger.Info("rule source stopped", "rule_source", name, "kind", rs.cfg.Kind())
		if rs.cfg.AMQP != nil {
			for _, key := range rs.cfg.AMQP.Bindings {
				staleOf[name] = append(staleOf[name], amqpBinding{rs.cfg.AMQP.Exchange, key})
			}
			if _, still := set.Sources[name]; !still {
				// Gone for good: stop its queue from filling up. The
				// queue and what it holds stay (delete it by hand).
				r.unbind(name, staleOf[name])
			}
		}
	}

	r.engine.Swap(set)

	sort.Slice(start, func(i, j int) bool { return start[i].Name < start[j].Name })
	for _, sc := range start {
		keep[sc.Name] = r.start(sc, staleOf[sc.Name])
	}
	r.mu.Lock()
	r.sources = keep
	r.lastErr = nil
	r.lastReload = time.Now()
	r.reloads++
	r.mu.Unlock()
}

// newSource builds the source sc configures.
func (r *Runner) newSource(sc SourceConfig, stale []amqpBinding) Source {
	switch {
	case sc.AMQP != nil:
		s := NewAMQPSource(sc.Name, *sc.AMQP, r.amqpOptions(), r.logger)
		s.stale = stale
		return s
	case sc.Hook != nil:
		return NewHookSource(sc.Name, *sc.Hook)
	case sc.Directory != nil:
		return NewDirectorySource(sc.Name, *sc.Directory, r.cfg.Settle, r.logger)
	case sc.UDP != nil:
		return NewUDPSource(sc.Name, *sc.UDP, r.logger)
	}
	return nil
}

func (r *Runner) amqpOptions() AMQPOptions {
	return AMQPOptions{URL: r.cfg.AMQPURL, QueuePrefix: r.cfg.QueuePrefix,
		DeadLetterExchange: r.cfg.DeadLetterExchange, Prefetch: r.cfg.Prefetch}
}

// start runs the source sc configures until it is stopped, starting it
// again with backoff whenever it fails.
func (r *Runner) start(sc SourceConfig, stale []amqpBinding) *runningSource {
	ctx, cancel := context.WithCancel(r.runCtx)
	rs := &runningSource{cfg: sc, src: r.newSource(sc, stale), cancel: cancel, done: make(chan struct{})}
	name := sc.Name
	h := func(ctx context.Context, ev Event) error { return r.engine.Handle(ctx, name, ev) }
	go func() {
		defer close(rs.done)
		if rs.src == nil {
			return
		}
		wait := r.cfg.RestartMin
		for {
			started := time.Now()
			err := rs.src.Run(ctx, h)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				err = errors.New("source stopped")
			}
			if time.Since(started) > r.cfg.RestartMax {
				wait = r.cfg.RestartMin
			}
			rs.mu.Lock()
			rs.err, rs.restarts = err, rs.restarts+1
			rs.mu.Unlock()
			r.logger.Error("rule source failed; restarting", "rule_source", name, "kind", sc.Kind(), "error", err, "backoff", wait)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
			wait = min(wait*2, r.cfg.RestartMax)
			// Sources are single-use where they hold state (ready
			// channels): build a fresh one.
			src := r.newSource(sc, stale)
			rs.mu.Lock()
			rs.src = src
			rs.mu.Unlock()
		}
	}()
	r.logger.Info("rule source started", "rule_source", name, "kind", sc.Kind())
	return rs
}

// unbind removes bindings from the queue of a removed AMQP source, best
// effort: failing leaves the queue collecting events nobody reads, which
// is logged.
func (r *Runner) unbind(name string, bindings []amqpBinding) {
	queue := r.amqpOptions().withDefaults().QueuePrefix + "." + name
	err := func() error {
		conn, err := amqp.DialConfig(r.cfg.AMQPURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
		if err != nil {
			return err
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		defer ch.Close()
		for _, b := range bindings {
			if err := ch.QueueUnbind(queue, b.key, b.exchange, nil); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		r.logger.Warn("could not unbind the queue of a removed rule source; it keeps collecting events", "rule_source", name, "queue", queue, "error", err)
	}
}

func (r *Runner) stopAll() {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	r.mu.Lock()
	sources := r.sources
	r.sources = map[string]*runningSource{}
	r.mu.Unlock()
	for _, rs := range sources {
		rs.cancel()
	}
	for _, rs := range sources {
		<-rs.done
	}
}

// Hook returns the running webhook source name.
func (r *Runner) Hook(name string) (*HookReceiver, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rs, ok := r.sources[name]
	if !ok {
		return nil, false
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	h, ok := rs.src.(*HookReceiver)
	return h, ok
}

// Source returns the running source name (an *AMQPConsumer, *HookReceiver,
// *DirWatcher or *UDPListener), e.g. to wait for it to be ready.
func (r *Runner) Source(name string) (Source, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rs, ok := r.sources[name]
	if !ok {
		return nil, false
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.src, true
}

// LastError is why the last reload failed, or nil when it succeeded (the
// rule set in use is then the one on disk).
func (r *Runner) LastError() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.lastErr
}

// RunnerStatus is what a runner reports about itself.
type RunnerStatus struct {
	Dir   string   `json:"dir"`
	Files []string `json:"files"`
	// LastError is why the last reload failed; empty when the rule set in
	// use is the one on disk.
	LastError      string         `json:"last_error,omitempty"`
	LastReload     time.Time      `json:"last_reload"`
	Reloads        int64          `json:"reloads"`
	ReloadFailures int64          `json:"reload_failures"`
	Sources        []SourceStatus `json:"sources"`
}

// SourceStatus is one running source.
type SourceStatus struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Error is why the source last failed (it is restarted with backoff).
	Error    string    `json:"error,omitempty"`
	Restarts int       `json:"restarts"`
	UDP      *UDPStats `json:"udp,omitempty"`
}

// Status reports the loaded files, the reloads and the sources.
func (r *Runner) Status() RunnerStatus {
	r.mu.RLock()
	defer r.mu.RUnlock()
	st := RunnerStatus{Dir: r.cfg.Dir, Files: []string{}, LastReload: r.lastReload, Reloads: r.reloads,
		ReloadFailures: r.reloadFailures, Sources: []SourceStatus{}}
	if set := r.engine.Set(); set != nil {
		st.Files = append(st.Files, set.Files...)
	}
	if r.lastErr != nil {
		st.LastError = r.lastErr.Error()
	}
	for name, rs := range r.sources {
		rs.mu.Lock()
		ss := SourceStatus{Name: name, Kind: rs.cfg.Kind(), Restarts: rs.restarts}
		if rs.err != nil {
			ss.Error = rs.err.Error()
		}
		if u, ok := rs.src.(*UDPListener); ok {
			stats := u.Stats()
			ss.UDP = &stats
		}
		rs.mu.Unlock()
		st.Sources = append(st.Sources, ss)
	}
	sort.Slice(st.Sources, func(i, j int) bool { return st.Sources[i].Name < st.Sources[j].Name })
	return st
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Options configure one bench run.
type Options struct {
	Mode         string // all, longpoll, prefer, intake, replies, baseline, scale or sweep
	Clients      int
	Requests     int // measured operations per mode
	Warmup       int // unmeasured operations before them
	PayloadBytes int
	Responders   int // echo responders per request exchange
	DBMaxConns   int // the Postgres pool of the gateway and of the baseline
	// PostgresURL names an existing database to connect to; the bench
	// creates (and drops) its own database next to it.
	PostgresURL string
	AMQPURL     string
	// SwitchboardBin is a prebuilt switchboard binary; empty builds
	// ./cmd/switchboard of the current module.
	SwitchboardBin string
	// GatewayEnv is added to the gateway's environment (KEY=VALUE), e.g.
	// SWITCHBOARD_LIFECYCLE_EVENTS=false to measure without events.
	GatewayEnv []string
	// BaselineReplyQueue is the baseline reply queue's type: classic or
	// quorum (the gateway's reply queue is a quorum queue).
	BaselineReplyQueue string
	// CPUProfile, when set, is where the gateway's CPU profile of the
	// longpoll phase is written, if its binary serves /debug/pprof/.
	CPUProfile        string
	CPUProfileSeconds int // 0: about the length of the longpoll phase
	Timeout           time.Duration

	// Scale mode: Waiters long-polls parked at once, held by client
	// processes of at most WaitersPerProcess connections each.
	Waiters           int
	WaitersPerProcess int
	// ScaleProto is how the waiters speak to the gateway: h2c (HTTP/2
	// without TLS, many long-polls per connection) or http1 (one
	// connection per long-poll).
	ScaleProto string

	// Sweep mode: longpoll and the baseline round trip at each of
	// SweepClients, SweepRequests measured after SweepWarmup each; the
	// figures go to SweepCSV and a chart to SweepPNG (empty: not written).
	SweepClients  []int
	SweepRequests int
	SweepWarmup   int
	SweepCSV      string
	SweepPNG      string
	// Progress receives what the bench is doing (stderr by default).
	Progress io.Writer

	// inspect, when set (by tests), runs before the cleanup with the
	// bench's database URL.
	inspect func(ctx context.Context, dbURL string) error
}

// DefaultOptions are the flags' defaults.
func DefaultOptions() Options {
	return Options{
		Mode: "all", Clients: 64, Requests: 5000, Warmup: 500, PayloadBytes: 256, Responders: 2, DBMaxConns: 20,
		PostgresURL:        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		AMQPURL:            "amqp://guest:guest@127.0.0.1:5672/",
		BaselineReplyQueue: "classic",
		Timeout:            5 * time.Minute,
		Progress:           os.Stderr,
		Waiters:            20000,
		WaitersPerProcess:  10000,
		ScaleProto:         "h2c",
		SweepClients:       []int{1, 2, 4, 8, 16, 32, 64, 128},
		SweepRequests:      2000,
		SweepWarmup:        200,
		SweepCSV:           "bench-sweep.csv",
		SweepPNG:           "bench-latency.png",
	}
}

var modes = []string{"all", "longpoll", "prefer", "intake", "replies", "baseline", "scale", "sweep"}

func (o Options) validate() error {
	switch {
	case !contains(modes, o.Mode):
		return fmt.Errorf("mode %q: want one of %s", o.Mode, strings.Join(modes, ", "))
	case o.Clients < 1 || o.Clients > 4096:
		return errors.New("clients must be from 1 to 4096")
	case o.Requests < 1 || o.Requests > 10_000_000:
		return errors.New("requests must be from 1 to 10000000")
	case o.Warmup < 0 || o.Warmup > 10_000_000:
		return errors.New("warmup must be from 0 to 10000000")
	case o.PayloadBytes < 0 || o.PayloadBytes > 512<<10:
		return errors.New("payload must be from 0 to 512 KiB")
	case o.Responders < 1 || o.Responders > 64:
		return errors.New("responders must be from 1 to 64")
	case o.DBMaxConns < 2:
		return errors.New("db max conns must be at least 2")
	case o.BaselineReplyQueue != "classic" && o.BaselineReplyQueue != "quorum":
		return errors.New("baseline reply queue must be classic or quorum")
	case o.Timeout <= 0:
		return errors.New("timeout must be positive")
	case o.CPUProfileSeconds < 0:
		return errors.New("cpu profile seconds must not be negative")
	case o.Mode == "scale" && (o.Waiters < 1 || o.Waiters > 1_000_000):
		return errors.New("waiters must be from 1 to 1000000")
	case o.Mode == "scale" && o.ScaleProto != "h2c" && o.ScaleProto != "http1":
		return fmt.Errorf("-scale-proto must be h2c or http1")
	case o.Mode == "scale" && (o.WaitersPerProcess < 1 || o.WaitersPerProcess > 60_000):
		return errors.New("waiters per process must be from 1 to 60000")
	case o.Mode == "scale" && (o.Waiters+o.WaitersPerProcess-1)/o.WaitersPerProcess > maxClientProcesses:
		return fmt.Errorf("waiters / waiters per process: at most %d client processes", maxClientProcesses)
	case o.Mode == "sweep" && len(o.SweepClients) == 0:
		return errors.New("sweep clients: give at least one client count")
	case o.Mode == "sweep" && (o.SweepRequests < 1 || o.SweepRequests > 10_000_000):
		return errors.New("sweep requests must be from 1 to 10000000")
	case o.Mode == "sweep" && (o.SweepWarmup < 0 || o.SweepWarmup > 10_000_000):
		return errors.New("sweep warmup must be from 0 to 10000000")
	}
	for _, c := range o.SweepClients {
		if c < 1 || c > 4096 {
			return errors.New("each sweep client count must be from 1 to 4096")
		}
	}
	if err := requireLoopback("postgres", o.PostgresURL); err != nil {
		return err
	}
	return requireLoopback("amqp", o.AMQPURL)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// payload is a JSON body like the seed document's, padded to about size
// bytes.
func payload(size int) []byte {
	const seed = `{"Workflow":"46371a70b2cf3953b12b3e0bf8a83ea2","Modules":[{"GridCapability":["23c83140-05df-4b53-9ccf-ce1fcfc22773"]}]}`
	if size <= len(seed)+10 {
		return []byte(seed)
	}
	pad := strings.Repeat("x", size-len(seed)-9)
	return []byte(seed[:len(seed)-1] + `,"Pad":"` + pad + `"}`)
}

// Side is one system's figures for one mode.
type Side struct {
	Requests   int     `json:"requests"` // measured operations that succeeded
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	RPS        float64 `json:"rps"`
	P50MS      float64 `json:"p50_ms"`
	P90MS      float64 `json:"p90_ms"`
	P99MS      float64 `json:"p99_ms"`
	MaxMS      float64 `json:"max_ms"`
	// CPUSeconds is the gateway's (or the baseline service's) user+system
	// CPU during the measured phase; PeakRSSMiB its VmHWM.
	CPUSeconds    float64 `json:"cpu_seconds"`
	CPUPerRequest float64 `json:"cpu_us_per_request"`
	PeakRSSMiB    float64 `json:"peak_rss_mib"`
	// BenchCPUSeconds is the bench process's own CPU in the phase: HTTP
	// clients or reply publisher, and the echo responders.
	BenchCPUSeconds float64 `json:"bench_cpu_seconds"`
	// HostCPUBusy is the share of all CPUs busy in the phase (everything:
	// Postgres, RabbitMQ, the gateway, the bench, other processes).
	HostCPUBusy float64 `json:"host_cpu_busy"`
	// OtherCPUSeconds is the CPU that processes other than the measured
	// one, the bench, Postgres and RabbitMQ used in the phase: other work
	// on the machine, which skews the figures when it is large.
	OtherCPUSeconds float64 `json:"other_cpu_seconds"`
	// PostgresCPUPerRequest and RabbitCPUPerRequest are the CPU all
	// Postgres and RabbitMQ processes used in the phase, per operation: on
	// a host where everything shares the CPUs, the services' cost of a
	// request decides the throughput as much as the gateway's own.
	PostgresCPUPerRequest float64 `json:"postgres_cpu_us_per_request"`
	RabbitCPUPerRequest   float64 `json:"rabbitmq_cpu_us_per_request"`
	// Stored is how many of the mode's rows the database holds in the
	// expected final status; StoredWant how many it should.
	Stored     int `json:"stored"`
	StoredWant int `json:"stored_want"`
}

func (s *Side) fill(p phase, lat latencySummary, elapsed time.Duration) {
	s.Requests, s.Errors = len(p.lats), p.errors
	if p.firstErr != nil {
		s.FirstError = p.firstErr.Error()
	}
	s.Seconds = elapsed.Seconds()
	if elapsed > 0 {
		s.RPS = float64(s.Requests) / elapsed.Seconds()
	}
	s.P50MS, s.P90MS, s.P99MS, s.MaxMS = ms(lat.P50), ms(lat.P90), ms(lat.P99), ms(lat.Max)
}

func (s *Side) fillMeter(m *meter, cpu time.Duration, peakRSS int64) {
	s.CPUSeconds = cpu.Seconds()
	if s.Requests > 0 {
		s.CPUPerRequest = float64(cpu.Microseconds()) / float64(s.Requests)
	}
	s.PeakRSSMiB = float64(peakRSS) / (1 << 20)
	s.BenchCPUSeconds = m.self.Seconds()
	s.HostCPUBusy = m.hostBusy
	s.OtherCPUSeconds = m.other.Seconds()
	if s.Requests > 0 {
		s.PostgresCPUPerRequest = float64(m.postgres.Microseconds()) / float64(s.Requests)
		s.RabbitCPUPerRequest = float64(m.rabbit.Microseconds()) / float64(s.Requests)
	}
}

// ModeResult is one mode's figures.
type ModeResult struct {
	Mode     string  `json:"mode"`
	Gateway  *Side   `json:"gateway,omitempty"`
	Baseline *Side   `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"` // gateway rps / baseline rps
}

// Summary is the headline: the longpoll round trip against the baseline.
type Summary struct {
	Mode        string  `json:"mode"`
	Ratio       float64 `json:"ratio"`
	GatewayRPS  float64 `json:"gateway_rps"`
	BaselineRPS float64 `json:"baseline_rps"`
	P99MS       float64 `json:"p99_ms"`
}

// Report is everything one run measured.
type Report struct {
	Started  time.Time    `json:"started"`
	Host     HostInfo     `json:"host"`
	Settings Settings     `json:"settings"`
	Modes    []ModeResult `json:"modes,omitempty"`
	Summary  Summary      `json:"summary,omitzero"`
	// Scale is the scale mode's figures; Sweep the sweep mode's points.
	Scale *ScaleResult  `json:"scale,omitempty"`
	Sweep []SweepResult `json:"sweep,omitempty"`
}

// HostInfo describes where the run happened.
type HostInfo struct {
	CPUs              int    `json:"cpus"`
	GoVersion         string `json:"go_version"`
	Postgres          string `json:"postgres"`
	SynchronousCommit string `json:"synchronous_commit"`
	RabbitMQ          string `json:"rabbitmq"`
}

// Settings are the run's parameters.
type Settings struct {
	Mode               string `json:"mode"`
	Clients            int    `json:"clients"`
	Requests           int    `json:"requests"`
	Warmup             int    `json:"warmup"`
	PayloadBytes       int    `json:"payload_bytes"`
	Responders         int    `json:"responders"`
	DBMaxConns         int    `json:"db_max_conns"`
	BaselineReplyQueue string `json:"baseline_reply_queue"`
	Waiters            int    `json:"waiters,omitempty"`
	SweepClients       []int  `json:"sweep_clients,omitempty"`
	SweepRequests      int    `json:"sweep_requests,omitempty"`
	SweepWarmup        int    `json:"sweep_warmup,omitempty"`
}

// bench is one run in progress.
type bench struct {
	opts    Options
	names   names
	dbURL   string
	payload []byte
	pool    *pgxpool.Pool // the bench's own: verification and reply timings
	amqp    *amqp.Connection
	gw      *gatewayProc
	http    *httpLoad
	log     func(format string, args ...any)
}

// run is the bench: set up, measure the modes asked for, clean up. It
// returns the report; its text form goes to out.
func run(ctx context.Context, opts Options, out io.Writer) (rep *Report, err error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	b := &bench{opts: opts, names: newNames(), payload: payload(opts.PayloadBytes)}
	b.log = func(format string, args ...any) { fmt.Fprintf(opts.Progress, "bench: "+format+"\n", args...) }
	rep = &Report{Started: time.Now(), Host: HostInfo{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()},
		Settings: Settings{Mode: opts.Mode, Clients: opts.Clients, Requests: opts.Requests, Warmup: opts.Warmup,
			PayloadBytes: len(b.payload), Responders: opts.Responders, DBMaxConns: opts.DBMaxConns,
			BaselineReplyQueue: opts.BaselineReplyQueue}}
	switch opts.Mode {
	case "scale":
		rep.Settings.Waiters = opts.Waiters
		// The gateway and the client processes inherit the raised limit.
		if lim, err := raiseNoFile(uint64(max(opts.Waiters, opts.WaitersPerProcess)) + 256); err != nil {
			b.log("RLIMIT_NOFILE: %v (soft %d, hard %d)", err, lim.Cur, lim.Max)
		}
	case "sweep":
		rep.Settings.SweepClients, rep.Settings.SweepRequests, rep.Settings.SweepWarmup = opts.SweepClients, opts.SweepRequests, opts.SweepWarmup
		// Responders and HTTP clients are sized for the largest point.
		opts.Clients = slices.Max(opts.SweepClients)
		b.opts.Clients = opts.Clients
		rep.Settings.Clients = opts.Clients
	}

	// Cleanup runs in reverse order of setup, on success, error, timeout
	// and Ctrl-C alike, each step bounded.
	var cleanups []func() error
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			if cerr := cleanups[i](); cerr != nil {
				b.log("cleanup: %v", cerr)
				if err == nil && ctx.Err() == nil {
					err = fmt.Errorf("cleanup: %w", cerr)
				}
			}
		}
		if ctx.Err() != nil && err != nil {
			b.log("stopped early; everything the run created is removed")
		}
	}()

	b.log("run %s: database %s, broker names %s.*", b.names.Suffix, b.names.Database, b.names.Prefix)
	tmp, err := os.MkdirTemp("", "sbbench-")
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() error { return os.RemoveAll(tmp) })

	needGateway := opts.Mode != "baseline"
	bin := opts.SwitchboardBin
	if needGateway && bin == "" {
		b.log("building ./cmd/switchboard")
		if bin, err = buildSwitchboard(ctx, tmp); err != nil {
			return nil, err
		}
	}

	cleanups = append(cleanups, func() error { return dropDatabase(opts.PostgresURL, b.names) })
	if b.dbURL, err = createDatabase(ctx, opts.PostgresURL, b.names); err != nil {
		return nil, err
	}
	poolCfg, err := pgxpool.ParseConfig(b.dbURL)
	if err != nil {
		return nil, err
	}
	poolCfg.MaxConns = 2
	if b.pool, err = pgxpool.NewWithConfig(ctx, poolCfg); err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() error { b.pool.Close(); return nil })
	_ = b.pool.QueryRow(ctx, "SELECT current_setting('server_version'), current_setting('synchronous_commit')").
		Scan(&rep.Host.Postgres, &rep.Host.SynchronousCommit)

	if b.amqp, err = amqp.DialConfig(opts.AMQPURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second),
		Properties: amqp.Table{"connection_name": "switchboard bench"}}); err != nil {
		return nil, fmt.Errorf("connect to rabbitmq: %w", err)
	}
	cleanups = append(cleanups, func() error { _ = b.amqp.Close(); return nil })
	if v, ok := b.amqp.Properties["version"].(string); ok {
		rep.Host.RabbitMQ = v
	}
	cleanups = append(cleanups, func() error { return deleteBrokerObjects(opts.AMQPURL, b.names) })
	if err := declareTopology(b.amqp, b.names, opts.BaselineReplyQueue); err != nil {
		return nil, err
	}

	if opts.Mode != "scale" { // its requests go to the sink, which nobody answers
		b.log("starting %d echo responders for the gateway and %d for the baseline", opts.Responders, opts.Responders)
		for _, r := range []struct{ exchange, queue string }{
			{b.names.Exchange, b.names.EchoQueue}, {b.names.BaselineExchange, b.names.BaselineEchoQueue},
		} {
			stop, err := startResponders(ctx, opts.AMQPURL, r.exchange, r.queue, "bench.echo.#", opts.Responders, opts.Clients)
			if err != nil {
				return nil, err
			}
			cleanups = append(cleanups, func() error { stop(); return nil })
		}
	}

	if needGateway {
		b.log("starting the gateway (%s serve)", bin)
		env := append(b.names.gatewayEnv(b.dbURL, opts.AMQPURL, opts.DBMaxConns), opts.GatewayEnv...)
		if opts.Mode == "scale" {
			// Long-polls must outlast the whole run.
			env = append(env, fmt.Sprintf("SWITCHBOARD_MAX_WAIT=%ds", scaleWaitSeconds(opts.Timeout)))
		}
		if b.gw, err = startGateway(ctx, bin, env); err != nil {
			return nil, err
		}
		cleanups = append(cleanups, func() error {
			if err := b.gw.stop(20 * time.Second); err != nil {
				return fmt.Errorf("gateway: %w\n%s", err, b.gw.logTail())
			}
			return nil
		})
		key, err := createKey(ctx, bin, b.dbURL)
		if err != nil {
			return nil, err
		}
		b.http = newHTTPLoad(b.gw.addr, key, opts.Clients, b.payload)
		cleanups = append(cleanups, func() error { b.http.close(); return nil })
	}

	var roundtrip *Side // the baseline round trip, shared by longpoll and prefer
	baselineFor := func(kind string) (*Side, error) {
		if kind == "roundtrip" && roundtrip != nil {
			return roundtrip, nil
		}
		s, err := b.baseline(ctx, kind)
		if kind == "roundtrip" {
			roundtrip = s
		}
		return s, err
	}
	switch opts.Mode {
	case "scale":
		if rep.Scale, err = b.scale(ctx); err != nil {
			return rep, err
		}
		printScale(out, rep.Scale)
		return rep, b.runInspect(ctx)
	case "sweep":
		if rep.Sweep, err = b.sweep(ctx, out); err != nil {
			return rep, err
		}
		return rep, b.runInspect(ctx)
	}
	plan := map[string][]string{
		"all":      {"longpoll", "prefer", "intake", "replies"},
		"baseline": {"baseline-roundtrip", "baseline-intake", "baseline-replies"},
	}[opts.Mode]
	if plan == nil {
		plan = []string{opts.Mode}
	}
	for _, mode := range plan {
		res := ModeResult{Mode: mode}
		if kind, ok := strings.CutPrefix(mode, "baseline-"); ok {
			if res.Baseline, err = baselineFor(kind); err != nil {
				return nil, err
			}
		} else {
			if res.Gateway, err = b.gatewayMode(ctx, mode); err != nil {
				return nil, err
			}
			kind := map[string]string{"longpoll": "roundtrip", "prefer": "roundtrip", "intake": "intake", "replies": "replies"}[mode]
			if res.Baseline, err = baselineFor(kind); err != nil {
				return nil, err
			}
			if res.Baseline.RPS > 0 {
				res.Ratio = res.Gateway.RPS / res.Baseline.RPS
			}
		}
		rep.Modes = append(rep.Modes, res)
		printMode(out, rep.Settings, res)
	}
	rep.Summary = summaryOf(rep.Modes)
	return rep, b.runInspect(ctx)
}

// runInspect runs the tests' inspection, if any.
func (b *bench) runInspect(ctx context.Context) error {
	if b.opts.inspect == nil {
		return nil
	}
	return b.opts.inspect(ctx, b.dbURL)
}

// summaryOf picks the headline: longpoll when it ran, else the first mode.
func summaryOf(modes []ModeResult) Summary {
	var s Summary
	for i, m := range modes {
		if i > 0 && m.Mode != "longpoll" {
			continue
		}
		s = Summary{Mode: m.Mode, Ratio: m.Ratio}
		if m.Gateway != nil {
			s.GatewayRPS, s.P99MS = m.Gateway.RPS, m.Gateway.P99MS
		}
		if m.Baseline != nil {
			s.BaselineRPS = m.Baseline.RPS
			if m.Gateway == nil {
				s.P99MS = m.Baseline.P99MS
			}
		}
	}
	return s
}

// gatewayMode measures one mode against the gateway.
func (b *bench) gatewayMode(ctx context.Context, mode string) (*Side, error) {
	o := b.opts
	pid := b.gw.pid()
	side := &Side{}
	var (
		key, status string
		op          func(context.Context, int) error
	)
	switch mode {
	case "longpoll":
		key, status, op = keyLongpoll, "replied", b.http.longpoll
	case "prefer":
		key, status, op = keyPrefer, "replied", b.http.prefer
	case "intake":
		key, status, op = keyIntake, "pending", b.http.intake
	case "replies":
		return b.gatewayReplies(ctx)
	}
	b.log("gateway %s: %d warm-up and %d measured requests on %d clients", mode, o.Warmup, o.Requests, o.Clients)
	if err := resetPeakRSS(pid); err != nil {
		b.log("cannot reset the gateway's peak RSS (%v): it is the process's lifetime peak", err)
	}
	warm, err := drive(ctx, o.Clients, o.Warmup, op)
	if err != nil {
		return nil, err
	}
	if warm.errors > 0 {
		b.log("gateway %s warm-up: %d errors, first: %v", mode, warm.errors, warm.firstErr)
	}
	var profile <-chan error
	if mode == "longpoll" && o.CPUProfile != "" {
		profile = b.startProfile(ctx, warm)
	}
	m := startMeter(pid)
	p, err := drive(ctx, o.Clients, o.Requests, op)
	m.stop()
	if err != nil {
		return nil, err
	}
	if profile != nil {
		if err := <-profile; err != nil {
			b.log("cpu profile: %v", err)
		} else {
			b.log("gateway cpu profile written to %s", o.CPUProfile)
		}
	}
	side.fill(p, summarize(p.lats), p.elapsed)
	rss, _ := procPeakRSS(pid)
	side.fillMeter(m, m.cpu, rss)
	side.StoredWant = len(warm.lats) + len(p.lats)
	if side.Stored, err = countStatus(ctx, b.pool, "requests", key, status); err != nil {
		return nil, err
	}
	if mode == "intake" {
		if err := purgeQueue(o.AMQPURL, b.names.SinkQueue); err != nil {
			b.log("purge %s: %v", b.names.SinkQueue, err)
		}
	}
	return side, nil
}

// gatewayReplies measures reply delivery alone: requests are created
// pending (their queue has no consumer), then their replies are published
// straight to the gateway's reply queue, all at once.
func (b *bench) gatewayReplies(ctx context.Context) (*Side, error) {
	o := b.opts
	pid := b.gw.pid()
	b.log("gateway replies: creating %d pending requests", o.Warmup+o.Requests)
	ids, err := b.http.createPending(ctx, o.Clients, o.Warmup+o.Requests, keyReplies, longTimeout)
	if err != nil {
		return nil, err
	}
	_ = resetPeakRSS(pid)
	b.log("gateway replies: %d warm-up and %d measured replies", o.Warmup, o.Requests)
	return b.measureReplies(ctx, pid, "requests", keyReplies, b.names.ReplyQueue, ids, nil)
}

// measureReplies publishes the warm-up replies, waits until they are
// stored, then publishes the measured ones and times them until stored.
// mark, when set, is called just before the measured publish (the baseline
// worker starts its CPU count there).
func (b *bench) measureReplies(ctx context.Context, pid int, table, key, queue string, ids []string, mark func() error) (*Side, error) {
	o := b.opts
	limit := 2*time.Minute + time.Duration(len(ids))*10*time.Millisecond
	if _, err := publishReplies(ctx, b.amqp, queue, ids[:o.Warmup], b.payload); err != nil {
		return nil, err
	}
	if err := awaitReplied(ctx, b.pool, table, key, o.Warmup, limit); err != nil {
		return nil, fmt.Errorf("warm-up replies: %w", err)
	}
	if mark != nil {
		if err := mark(); err != nil {
			return nil, err
		}
	}
	m := startMeter(pid)
	start := time.Now()
	measured := ids[o.Warmup:]
	sent, err := publishReplies(ctx, b.amqp, queue, measured, b.payload)
	if err != nil {
		return nil, err
	}
	waitErr := awaitReplied(ctx, b.pool, table, key, len(ids), limit)
	m.stop()
	if waitErr != nil && ctx.Err() != nil {
		return nil, waitErr
	}
	lats, last, err := replyLatencies(ctx, b.pool, table, measured, sent)
	if err != nil {
		return nil, err
	}
	side := &Side{}
	p := phase{lats: lats, errors: len(measured) - len(lats), firstErr: waitErr}
	side.fill(p, summarize(lats), last.Sub(start))
	rss, _ := procPeakRSS(pid)
	side.fillMeter(m, m.cpu, rss)
	side.StoredWant = len(ids)
	if side.Stored, err = countStatus(ctx, b.pool, table, key, "replied"); err != nil {
		return nil, err
	}
	return side, nil
}

// baseline runs one baseline variant in its own worker process.
func (b *bench) baseline(ctx context.Context, kind string) (*Side, error) {
	o := b.opts
	cfg := baselineConfig{Kind: kind, DatabaseURL: b.dbURL, AMQPURL: o.AMQPURL, Exchange: b.names.BaselineExchange,
		ReplyQueue: b.names.BaselineReplyQueue, Clients: o.Clients, Requests: o.Requests, Warmup: o.Warmup,
		DBMaxConns: o.DBMaxConns, Payload: string(b.payload)}
	cfg.RoutingKey = map[string]string{"roundtrip": keyBaseline, "intake": keyBaseIn, "replies": keyBaseRep}[kind]
	w, err := startBaseline(cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := w.stop(10 * time.Second); err != nil && !w.exited() {
			b.log("baseline worker: %v", err)
		}
	}()
	if kind == "replies" {
		b.log("baseline replies: pre-inserting %d pending rows", o.Warmup+o.Requests)
		ready, err := w.next(ctx, "ready")
		if err != nil {
			return nil, err
		}
		b.log("baseline replies: %d warm-up and %d measured replies", o.Warmup, o.Requests)
		side, err := b.measureReplies(ctx, w.pid(), baselineTable, keyBaseRep, b.names.BaselineReplyQueue, ready.IDs, func() error {
			if err := w.command("measure"); err != nil {
				return err
			}
			_, err := w.next(ctx, "measuring")
			return err
		})
		if err != nil {
			return nil, err
		}
		if err := w.command("stop"); err != nil {
			return nil, err
		}
		res, err := w.next(ctx, "result")
		if err != nil {
			return nil, err
		}
		// The worker counted its own CPU over the same span; the bench's
		// /proc reading of it (already in side) agrees with it.
		side.Errors += res.Result.Errors
		if side.FirstError == "" {
			side.FirstError = res.Result.FirstError
		}
		return side, nil
	}

	b.log("baseline %s: %d warm-up and %d measured requests on %d clients", kind, o.Warmup, o.Requests, o.Clients)
	if _, err := w.next(ctx, "measuring"); err != nil {
		return nil, err
	}
	m := startMeter(w.pid())
	msg, err := w.next(ctx, "result")
	m.stop()
	if err != nil {
		return nil, err
	}
	r := msg.Result
	side := &Side{}
	// The worker sent its latency summary; the phase only carries counts.
	p := phase{lats: make([]time.Duration, r.Done), errors: r.Errors}
	if r.FirstError != "" {
		p.firstErr = errors.New(r.FirstError)
	}
	side.fill(p, r.Latency, r.Elapsed)
	side.fillMeter(m, r.CPU, r.PeakRSS)
	status := map[string]string{"roundtrip": "replied", "intake": "pending"}[kind]
	side.StoredWant = o.Warmup + o.Requests // the worker's warm-up errors are not reported
	if side.Stored, err = countStatus(ctx, b.pool, baselineTable, cfg.RoutingKey, status); err != nil {
		return nil, err
	}
	if kind == "intake" {
		if err := purgeQueue(o.AMQPURL, b.names.SinkQueue); err != nil {
			b.log("purge %s: %v", b.names.SinkQueue, err)
		}
	}
	return side, nil
}

// startProfile asks the gateway for a CPU profile of the coming measured
// phase, if its binary serves net/http/pprof (the stock switchboard does
// not: build a profiling copy and pass it with -switchboard-bin). The
// profile's length is estimated from the warm-up's rate.
func (b *bench) startProfile(ctx context.Context, warm phase) <-chan error {
	done := make(chan error, 1)
	base := b.http.base + "/debug/pprof/"
	res, err := b.http.client.Get(base)
	if err == nil {
		_ = res.Body.Close()
	}
	if err != nil || res.StatusCode != http.StatusOK {
		b.log("-cpuprofile: this gateway binary serves no /debug/pprof/ (the stock switchboard has no profiling endpoint);" +
			" its CPU and RSS figures come from /proc. To profile, pass -switchboard-bin with a build that mounts net/http/pprof, or use perf record -p <pid>")
		return nil
	}
	secs := b.opts.CPUProfileSeconds
	if secs == 0 {
		secs = 1
		if warm.elapsed > 0 && len(warm.lats) > 0 {
			rate := float64(len(warm.lats)) / warm.elapsed.Seconds()
			secs = max(1, int(0.9*float64(b.opts.Requests)/rate))
		}
	}
	b.log("profiling the gateway for %ds", secs)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%sprofile?seconds=%d", base, secs), nil)
		res, err := http.DefaultClient.Do(req) // no client timeout: the profile takes secs
		if err != nil {
			done <- err
			return
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			done <- fmt.Errorf("profile: %s", res.Status)
			return
		}
		f, err := os.Create(b.opts.CPUProfile)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, res.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	return done
}

// writeJSON writes the report to path.
func writeJSON(path string, rep *Report) error {
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(raw, '\n'), 0o644)
}

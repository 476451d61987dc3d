// Command bench measures switchboard against the path a team would write
// without it, in one run, on the local Postgres and RabbitMQ.
//
// It creates its own database (sbbench_<random>) and its own exchanges and
// queues (sbbench.<random>.*), builds ./cmd/switchboard and runs `switchboard
// serve` as a subprocess, so the gateway's CPU seconds and peak RSS come from
// /proc/<pid> and are its own. In-process echo responders (the Go SDK)
// answer. Then, for each mode, N concurrent clients send a fixed number of
// requests after a warm-up:
//
//	longpoll  POST /bench/echo/longpoll (202), then GET /v1/requests/{id}?wait=30 until replied
//	prefer    POST with Prefer: wait=30, answered 200 with the reply
//	intake    POST answered 202 only (the request is bound to a queue nobody consumes)
//	replies   reply delivery alone: N pending requests, then N replies published
//	          straight to the reply queue, timed until all are stored
//	baseline  only the baseline
//	all       every mode above, each against its baseline
//
// Two more modes run on their own (not in all):
//
//	scale     -waiters W (20000) long-polls parked on the gateway at once, then
//	          woken: its RSS per waiter and the wake-up latency
//	sweep     longpoll and the baseline round trip at each of -sweep-clients
//	          (1,2,4,...,128), -sweep-requests (2000) each: a CSV (-sweep-csv) and
//	          a PNG chart of latency and throughput against clients (-sweep-png)
//
// The scale mode submits W requests to a routing key bound to the sink
// queue (they stay pending), reads the gateway's VmRSS, then opens one GET
// /v1/requests/{id}?wait=N per request from client subprocesses (the bench
// binary re-executed, at most -waiters-per-process long-polls each, since
// each process's open files are bounded by RLIMIT_NOFILE), dialling from
// their own loopback source addresses (127.0.0.2, 127.0.0.3, ...) so that no
// address runs out of ephemeral ports. With -scale-proto h2c (the default)
// they speak HTTP/2 without TLS with prior knowledge, many long-polls per
// connection: the gateway allows 1000 streams on one, and Go's transport
// dials another connection whenever every one it has is full. That is how
// W=20000 fits a gateway limited to 20000 open files. With -scale-proto
// http1 each long-poll has its own TCP connection, so W must stay below the
// gateway's open-file limit. The output and -json give the protocol and the
// client connections the gateway held for the waiters (the growth of its
// switchboard_http_connections gauge). The gateway runs with
// SWITCHBOARD_MAX_WAIT beyond -timeout, and the bench raises its own soft
// RLIMIT_NOFILE to the hard limit for the gateway to inherit. When the
// switchboard_waiters gauge on /metrics counts all W, the RSS is read again;
// the growth divided by the waiters parked is the memory one long-poll
// costs. Then all W replies are published straight to the reply queue, and
// each waiter's wake-up is timed from its reply's publish until its GET
// answered 200 replied. It ends with
//
//	bench-scale: proto=<h2c|http1> connections=<n> waiters=<n> parked=<n> rss_mb=<n> rss_per_waiter_bytes=<n> wake_p50_ms=<n> wake_p99_ms=<n> wake_max_ms=<n> all_woken_ms=<n> failed=<n>
//
// and exits non-zero unless every waiter was parked and got its reply. A
// gateway whose RLIMIT_NOFILE cannot hold W connections (and its own few
// files) is reported as such: the connections beyond it wait unaccepted.
//
// The baseline is the naive direct path, with no HTTP and no gateway: per
// request an INSERT (autocommit), a persistent mandatory publish on the
// caller's own confirm channel with the confirm awaited, the reply awaited on
// a durable reply queue (a dispatcher routes replies by correlation id), and
// an UPDATE (autocommit) before the reply is acked. It runs in its own
// subprocess (the bench binary re-executed) for its own CPU and RSS figures,
// with the same concurrency, payload, Postgres pool size and responders.
// Durability is the same on both sides: synchronous_commit is whatever the
// server has, and every message is persistent and confirmed.
//
// Everything runs on loopback only and is bounded by -timeout. On exit,
// including Ctrl-C and a timeout, the subprocesses are stopped and the
// database, queues and exchanges are removed.
//
// Usage:
//
//	go run ./cmd/bench [-mode all] [-clients 64] [-requests 5000] [-warmup 500] [-json out.json]
//	go run ./cmd/bench -mode scale [-waiters 20000] [-scale-proto h2c|http1] [-waiters-per-process 10000]
//	go run ./cmd/bench -mode sweep [-sweep-clients 1,2,4,8,16,32,64,128] [-sweep-requests 2000] [-sweep-warmup 200] \
//		[-sweep-csv bench-sweep.csv] [-sweep-png bench-latency.png]
//
// The other modes' run ends with one summary line for the longpoll round trip:
//
//	bench: ratio=<gateway/baseline> gateway_rps=<n> baseline_rps=<n> p99_ms=<n>
//
// Profiling: the stock gateway serves no /debug/pprof, so `go tool pprof
// http://.../debug/pprof/profile` does not work against it, and the bench
// measures it with /proc only. -cpuprofile FILE fetches a CPU profile of the
// longpoll phase from a gateway binary that does serve net/http/pprof on its
// HTTP address (a throwaway profiling build, passed with -switchboard-bin);
// with the stock binary it says so and carries on. `perf record -g -p <pid>`
// works on the stock binary too.
//
// Other SWITCHBOARD_* variables in the environment (e.g.
// SWITCHBOARD_PREFETCH) reach the gateway subprocess, to try settings.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if isBaselineWorker() {
		os.Exit(baselineMain())
	}
	if isWaiterWorker() {
		os.Exit(waiterMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C ends the bench at once
	}()
	err := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := DefaultOptions()
	o.Progress = stderr
	var jsonPath string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Mode, "mode", o.Mode, "all, longpoll, prefer, intake, replies, baseline, scale or sweep")
	fs.IntVar(&o.Clients, "clients", o.Clients, "concurrent clients (and baseline callers)")
	fs.IntVar(&o.Requests, "requests", o.Requests, "measured requests (or replies) per mode")
	fs.IntVar(&o.Warmup, "warmup", o.Warmup, "unmeasured requests before them")
	fs.IntVar(&o.PayloadBytes, "payload", o.PayloadBytes, "request body size in bytes (a seed-like JSON document, padded)")
	fs.IntVar(&o.Responders, "responders", o.Responders, "echo responders per request exchange, each handling -clients at once")
	fs.IntVar(&o.DBMaxConns, "db-max-conns", o.DBMaxConns, "Postgres pool size of the gateway and of the baseline")
	fs.StringVar(&o.PostgresURL, "postgres-url", o.PostgresURL, "an existing database on the local Postgres; the bench creates its own beside it")
	fs.StringVar(&o.AMQPURL, "amqp-url", o.AMQPURL, "the local RabbitMQ")
	fs.StringVar(&o.SwitchboardBin, "switchboard-bin", "", "a prebuilt switchboard binary (default: go build ./cmd/switchboard)")
	fs.Func("gateway-env", "KEY=VALUE added to the gateway's environment (repeatable), e.g. SWITCHBOARD_LIFECYCLE_EVENTS=false", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		o.GatewayEnv = append(o.GatewayEnv, v)
		return nil
	})
	fs.StringVar(&o.BaselineReplyQueue, "baseline-reply-queue", o.BaselineReplyQueue, "type of the baseline's durable reply queue: classic or quorum (the gateway's is quorum)")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write the gateway's CPU profile of the longpoll phase here (needs a -switchboard-bin serving /debug/pprof/)")
	fs.IntVar(&o.CPUProfileSeconds, "cpuprofile-seconds", 0, "length of that profile (0: about the measured phase)")
	fs.IntVar(&o.Waiters, "waiters", o.Waiters, "scale: long-polls parked at once")
	fs.StringVar(&o.ScaleProto, "scale-proto", o.ScaleProto, "scale: h2c (HTTP/2 without TLS, up to 1000 long-polls per connection) or http1 (a connection per long-poll)")
	fs.IntVar(&o.WaitersPerProcess, "waiters-per-process", o.WaitersPerProcess, "scale: connections per client process (each process's open files are limited)")
	fs.Var(clientList{&o.SweepClients}, "sweep-clients", "sweep: comma-separated client counts")
	fs.IntVar(&o.SweepRequests, "sweep-requests", o.SweepRequests, "sweep: measured requests per point and side")
	fs.IntVar(&o.SweepWarmup, "sweep-warmup", o.SweepWarmup, "sweep: unmeasured requests before them")
	fs.StringVar(&o.SweepCSV, "sweep-csv", o.SweepCSV, "sweep: write the points as CSV here (empty: not written)")
	fs.StringVar(&o.SweepPNG, "sweep-png", o.SweepPNG, "sweep: write the latency and throughput chart as PNG here (empty: not written)")
	fs.StringVar(&jsonPath, "json", "", "also write the results as JSON to this file")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "bound on the whole run, cleanup excluded")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	rep, err := run(ctx, o, stdout)
	if err != nil {
		return err
	}
	printNotes(stdout, rep.Host, o.Mode)
	if jsonPath != "" {
		if err := writeJSON(jsonPath, rep); err != nil {
			return err
		}
	}
	switch {
	case rep.Scale != nil:
		fmt.Fprintln(stdout, scaleSummaryLine(rep.Scale))
		return rep.Scale.passed()
	case o.Mode == "sweep":
		fmt.Fprintln(stdout, sweepSummaryLine(o, rep.Sweep))
	default:
		fmt.Fprintln(stdout, summaryLine(rep.Summary))
	}
	return nil
}

package main

import (
	"fmt"
	"io"
	"strings"
)

var modeTitles = map[string]string{
	"longpoll":           "round trip: POST, then GET ?wait=30 until replied",
	"prefer":             "round trip: POST with Prefer: wait=30",
	"intake":             "intake: POST answered 202 (committed, published, confirmed)",
	"replies":            "reply delivery: replies published straight to the reply queue until stored",
	"baseline-roundtrip": "baseline round trip",
	"baseline-intake":    "baseline intake",
	"baseline-replies":   "baseline reply delivery",
}

// printMode writes one mode's table.
func printMode(w io.Writer, s Settings, m ModeResult) {
	unit := "requests"
	if strings.HasSuffix(m.Mode, "replies") {
		unit = "replies"
	}
	fmt.Fprintf(w, "\nmode %s — %s\n  %d clients, %d %s measured after %d warm-up, payload %d B\n",
		m.Mode, modeTitles[m.Mode], s.Clients, s.Requests, unit, s.Warmup, s.PayloadBytes)
	fmt.Fprintf(w, "  %-9s %9s %8s %8s %8s %8s %8s %10s %9s %9s %8s %8s %6s %13s %6s\n",
		"", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms", "cpu s", "cpu µs/op", "peak MiB", "bench cpu", "pg µs/op", "mq µs/op", "host", "stored", "errors")
	row := func(name string, x *Side) {
		if x == nil {
			return
		}
		fmt.Fprintf(w, "  %-9s %9.1f %8.2f %8.2f %8.2f %8.2f %8.2f %10.0f %9.1f %9.2f %8.0f %8.0f %5.0f%% %6d/%-6d %6d\n",
			name, x.RPS, x.P50MS, x.P90MS, x.P99MS, x.MaxMS, x.CPUSeconds, x.CPUPerRequest, x.PeakRSSMiB,
			x.BenchCPUSeconds, x.PostgresCPUPerRequest, x.RabbitCPUPerRequest, 100*x.HostCPUBusy, x.Stored, x.StoredWant, x.Errors)
	}
	row("gateway", m.Gateway)
	row("baseline", m.Baseline)
	for _, x := range []*Side{m.Gateway, m.Baseline} {
		if x != nil && x.FirstError != "" {
			fmt.Fprintf(w, "  first error: %s\n", x.FirstError)
		}
	}
	if m.Gateway != nil && m.Baseline != nil {
		fmt.Fprintf(w, "  ratio gateway/baseline: %.2f\n", m.Ratio)
		printBudget(w, m.Gateway, m.Baseline)
	}
}

// printBudget writes where each side's CPU went per operation. When the
// host's CPUs are all busy, throughput is CPUs / (CPU per operation), so
// the ratio of the two budgets is the ratio this host allows, whatever the
// batching: it names the resource that limits each side.
func printBudget(w io.Writer, gw, base *Side) {
	gt, bt := gw.budget(), base.budget()
	if gt == 0 || bt == 0 {
		return
	}
	fmt.Fprintf(w, "  cpu per op: gateway side %.0f µs (gateway %.0f, postgres %.0f, rabbitmq %.0f, bench %.0f);"+
		" baseline side %.0f µs (service %.0f, postgres %.0f, rabbitmq %.0f, bench %.0f); budget ratio %.2f\n",
		gt, gw.CPUPerRequest, gw.PostgresCPUPerRequest, gw.RabbitCPUPerRequest, gw.benchPerRequest(),
		bt, base.CPUPerRequest, base.PostgresCPUPerRequest, base.RabbitCPUPerRequest, base.benchPerRequest(), bt/gt)
}

func (s *Side) benchPerRequest() float64 {
	if s.Requests == 0 {
		return 0
	}
	return s.BenchCPUSeconds * 1e6 / float64(s.Requests)
}

// budget is the CPU one operation cost everything measured: the service,
// Postgres, RabbitMQ and the load generator, in µs.
func (s *Side) budget() float64 {
	return s.CPUPerRequest + s.PostgresCPUPerRequest + s.RabbitCPUPerRequest + s.benchPerRequest()
}

// printNotes explains the columns once (the scale mode has none).
func printNotes(w io.Writer, h HostInfo, mode string) {
	fmt.Fprintf(w, "\nhost: %d CPUs, %s, Postgres %s (synchronous_commit=%s), RabbitMQ %s\n",
		h.CPUs, h.GoVersion, h.Postgres, h.SynchronousCommit, h.RabbitMQ)
	if mode == "scale" {
		return
	}
	fmt.Fprintln(w, "cpu s, cpu µs/op, peak MiB: the gateway process (or the baseline service process) alone, from /proc;"+
		" bench cpu: the load generator and echo responders; pg µs/op, mq µs/op: CPU of all Postgres and RabbitMQ processes per operation;"+
		" host: all CPUs busy, everything included. budget ratio: baseline side's CPU per op over the gateway side's,"+
		" the ratio a CPU-bound host allows.")
}

// summaryLine is the last line of every run.
func summaryLine(s Summary) string {
	return fmt.Sprintf("bench: ratio=%.2f gateway_rps=%.0f baseline_rps=%.0f p99_ms=%.0f", s.Ratio, s.GatewayRPS, s.BaselineRPS, s.P99MS)
}

// printScale writes the scale mode's figures.
func printScale(w io.Writer, r *ScaleResult) {
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	how := "one connection each"
	if r.Proto == "h2c" {
		how = "HTTP/2 without TLS, sharing connections"
	}
	fmt.Fprintf(w, "\nmode scale — %d long-polls (GET ?wait=N, %s) parked at once, then all their replies published\n", r.Waiters, how)
	fmt.Fprintf(w, "  clients:     %d processes, %d loopback source addresses; all GETs parked in %.1f s\n",
		r.ClientProcesses, r.SourceAddresses, r.OpenSeconds)
	fmt.Fprintf(w, "  parked:      %d of %d (from %s); %d client connections held by the gateway for them (switchboard_http_connections %d);"+
		" %d established to its port, %d of them unaccepted\n",
		r.Parked, r.Waiters, r.ParkedFrom, r.Connections, r.ConnectionsGauge, r.Established, r.AcceptQueue)
	fmt.Fprintf(w, "  open files:  %d before, %d parked, limit %d\n", r.FDsBefore, r.FDsParked, r.FDLimit)
	fmt.Fprintf(w, "  goroutines:  %d before, %d parked\n", r.GoroutinesBefore, r.GoroutinesParked)
	fmt.Fprintf(w, "  RSS:         %.1f MiB before, %.1f MiB parked: %d bytes per waiter (Go heap in use %d, stacks %d); peak %.1f MiB\n",
		mib(r.RSSBeforeBytes), mib(r.RSSParkedBytes), r.RSSPerWaiterBytes, r.HeapPerWaiterBytes, r.StackPerWaiterBytes, mib(r.PeakRSSBytes))
	fmt.Fprintf(w, "  replies:     published in %.0f ms; the last stored %.0f ms after the last publish\n", r.PublishMS, r.AllStoredMS)
	fmt.Fprintf(w, "  wake-up:     publish to answer p50 %.1f / p90 %.1f / p99 %.1f / max %.1f ms; stored to answer p50 %.1f / p99 %.1f / max %.1f ms\n",
		r.WakeP50MS, r.WakeP90MS, r.WakeP99MS, r.WakeMaxMS, r.StoreToAnswerP50MS, r.StoreToAnswerP99MS, r.StoreToAnswerMaxMS)
	fmt.Fprintf(w, "  all woken:   %.0f ms after the last publish\n", r.AllWokenMS)
	fmt.Fprintf(w, "  CPU s from first publish to last answer (%.1f s): gateway %.2f, client processes %.2f, Postgres %.2f, RabbitMQ %.2f, anything else %.2f; host %.0f%% busy\n",
		r.WakeSeconds, r.WakeCPUSeconds, r.WakeClientCPUSeconds, r.WakePostgresCPUSeconds, r.WakeRabbitCPUSeconds, r.WakeOtherCPUSeconds, 100*r.WakeHostCPUBusy)
	fmt.Fprintf(w, "  woken:       %d with their reply, %d failed\n", r.Woken, r.Failed)
	if r.FirstFailure != "" {
		fmt.Fprintf(w, "  first failure: %s\n", r.FirstFailure)
	}
	if r.GatewayWarnings > 0 {
		fmt.Fprintf(w, "  gateway logged %d warnings or errors; first: %s\n", r.GatewayWarnings, r.FirstGatewayWarning)
	}
}

// printSweep writes the sweep's table.
func printSweep(w io.Writer, o Options, pts []SweepResult) {
	fmt.Fprintf(w, "\nmode sweep — longpoll round trip (gateway) and baseline round trip at each client count\n  %d requests per point after %d warm-up\n",
		o.SweepRequests, o.SweepWarmup)
	fmt.Fprintf(w, "  %7s %-9s %9s %8s %8s %8s %8s %6s %8s\n", "clients", "", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "other s")
	for _, p := range pts {
		fmt.Fprintf(w, "  %7d %-9s %9.1f %8.2f %8.2f %8.2f %8.2f %6d %8.2f\n",
			p.Clients, p.Side, p.RPS, p.P50MS, p.P90MS, p.P99MS, p.MaxMS, p.Errors, p.OtherCPUSeconds)
	}
	fmt.Fprintln(w, "  other s: CPU seconds used in the point by processes other than the gateway (or baseline), the bench, Postgres"+
		" and RabbitMQ; when large, other work on the machine skewed the point")
}

// sweepSummaryLine is the sweep mode's last line.
func sweepSummaryLine(o Options, pts []SweepResult) string {
	return fmt.Sprintf("bench-sweep: points=%d clients=%s csv=%s png=%s", len(pts), clientList{&o.SweepClients}, o.SweepCSV, o.SweepPNG)
}

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
	fmt.Fprintf(w, "  %-9s %9s %8s %8s %8s %8s %8s %10s %9s %9s %6s %13s %6s\n",
		"", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms", "cpu s", "cpu µs/op", "peak MiB", "bench cpu", "host", "stored", "errors")
	row := func(name string, x *Side) {
		if x == nil {
			return
		}
		fmt.Fprintf(w, "  %-9s %9.1f %8.2f %8.2f %8.2f %8.2f %8.2f %10.0f %9.1f %9.2f %5.0f%% %6d/%-6d %6d\n",
			name, x.RPS, x.P50MS, x.P90MS, x.P99MS, x.MaxMS, x.CPUSeconds, x.CPUPerRequest, x.PeakRSSMiB,
			x.BenchCPUSeconds, 100*x.HostCPUBusy, x.Stored, x.StoredWant, x.Errors)
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
	}
}

// printNotes explains the columns once.
func printNotes(w io.Writer, h HostInfo) {
	fmt.Fprintf(w, "\nhost: %d CPUs, %s, Postgres %s (synchronous_commit=%s), RabbitMQ %s\n",
		h.CPUs, h.GoVersion, h.Postgres, h.SynchronousCommit, h.RabbitMQ)
	fmt.Fprintln(w, "cpu s, cpu µs/op, peak MiB: the gateway process (or the baseline service process) alone, from /proc;"+
		" bench cpu: the load generator and echo responders; host: all CPUs busy, everything included.")
}

// summaryLine is the last line of every run.
func summaryLine(s Summary) string {
	return fmt.Sprintf("bench: ratio=%.2f gateway_rps=%.0f baseline_rps=%.0f p99_ms=%.0f", s.Ratio, s.GatewayRPS, s.BaselineRPS, s.P99MS)
}

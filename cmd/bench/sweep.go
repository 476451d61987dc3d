package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// SweepResult is one point of the sweep: one side at one client count.
type SweepResult struct {
	Clients  int     `json:"clients"`
	Side     string  `json:"side"` // gateway (the longpoll round trip) or baseline (its round trip)
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	RPS      float64 `json:"rps"`
	P50MS    float64 `json:"p50_ms"`
	P90MS    float64 `json:"p90_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	// OtherCPUSeconds is the CPU other processes used meanwhile (see Side).
	OtherCPUSeconds float64 `json:"other_cpu_seconds"`
	Seconds         float64 `json:"seconds"`
}

func sweepPoint(clients int, side string, s *Side) SweepResult {
	return SweepResult{Clients: clients, Side: side, Requests: s.Requests, Errors: s.Errors,
		RPS: s.RPS, P50MS: s.P50MS, P90MS: s.P90MS, P99MS: s.P99MS, MaxMS: s.MaxMS,
		OtherCPUSeconds: s.OtherCPUSeconds, Seconds: s.Seconds}
}

// parseClientList reads a comma-separated list of client counts.
func parseClientList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("client count %q: want a positive integer", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no client counts")
	}
	return out, nil
}

// clientList is a flag.Value for -sweep-clients.
type clientList struct{ p *[]int }

func (c clientList) String() string {
	if c.p == nil {
		return ""
	}
	s := make([]string, len(*c.p))
	for i, n := range *c.p {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (c clientList) Set(v string) error {
	l, err := parseClientList(v)
	if err != nil {
		return err
	}
	*c.p = l
	return nil
}

// sweep measures the longpoll round trip and the baseline's at each client
// count, then writes the CSV and the chart.
func (b *bench) sweep(ctx context.Context, out io.Writer) ([]SweepResult, error) {
	o := b.opts
	var pts []SweepResult
	for _, c := range o.SweepClients {
		pb := *b
		pb.opts.Clients, pb.opts.Requests, pb.opts.Warmup = c, o.SweepRequests, o.SweepWarmup
		pb.opts.CPUProfile = ""
		gw, err := pb.gatewayMode(ctx, "longpoll")
		if err != nil {
			return pts, err
		}
		base, err := pb.baseline(ctx, "roundtrip")
		if err != nil {
			return pts, err
		}
		pts = append(pts, sweepPoint(c, "gateway", gw), sweepPoint(c, "baseline", base))
		b.log("sweep: %d clients: gateway %.0f/s p50 %.1f ms p99 %.1f ms; baseline %.0f/s p50 %.1f ms p99 %.1f ms",
			c, gw.RPS, gw.P50MS, gw.P99MS, base.RPS, base.P50MS, base.P99MS)
		for _, s := range []*Side{gw, base} {
			if s.Seconds > 0 && s.OtherCPUSeconds > 0.1*s.Seconds*float64(runtime.NumCPU()) {
				b.log("sweep: WARNING other processes took %.0f%% of the CPUs during the %d-client point: its figures are skewed",
					100*s.OtherCPUSeconds/(s.Seconds*float64(runtime.NumCPU())), c)
				break
			}
		}
	}
	printSweep(out, o, pts)
	if o.SweepCSV != "" {
		var buf bytes.Buffer
		if err := writeSweepCSV(&buf, pts); err != nil {
			return pts, err
		}
		if err := os.WriteFile(o.SweepCSV, buf.Bytes(), 0o644); err != nil {
			return pts, err
		}
		b.log("sweep: wrote %s", o.SweepCSV)
	}
	if o.SweepPNG != "" {
		note := fmt.Sprintf("closed loop: %d requests per point after %d warm-up, payload %d B, %d CPUs",
			o.SweepRequests, o.SweepWarmup, len(b.payload), runtime.NumCPU())
		img := plotSweep(pts, "switchboard long-poll round trip vs baseline", note)
		if err := writePNG(o.SweepPNG, img); err != nil {
			return pts, err
		}
		b.log("sweep: wrote %s", o.SweepPNG)
	}
	return pts, nil
}

// writeSweepCSV writes the points, one line per client count and side.
func writeSweepCSV(w io.Writer, pts []SweepResult) error {
	cw := csv.NewWriter(w)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	_ = cw.Write([]string{"clients", "side", "rps", "p50_ms", "p99_ms", "p90_ms", "max_ms", "requests", "errors", "other_cpu_s"})
	for _, p := range pts {
		_ = cw.Write([]string{strconv.Itoa(p.Clients), p.Side, f(p.RPS), f(p.P50MS), f(p.P99MS), f(p.P90MS), f(p.MaxMS),
			strconv.Itoa(p.Requests), strconv.Itoa(p.Errors), f(p.OtherCPUSeconds)})
	}
	cw.Flush()
	return cw.Error()
}

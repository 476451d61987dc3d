package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The scale mode parks many long-polls on the gateway at once and wakes
// them all:
//
//  1. W requests are submitted to a routing key bound to the sink queue,
//     which nobody consumes, so they stay pending;
//  2. the gateway's RSS is read (VmRSS), then W GET /v1/requests/{id}?wait=N
//     are opened, one per request, each on its own TCP connection. They come
//     from client subprocesses (the bench binary re-executed), at most
//     -waiters-per-process connections each, since one process's open
//     files are bounded by RLIMIT_NOFILE; each process dials from its own
//     loopback source addresses (127.0.0.2, ...) so the ephemeral ports of
//     one address never run out;
//  3. once every GET is written and the gateway's switchboard_waiters gauge
//     says they are held, its RSS is read again: the growth over the
//     waiters parked is the memory one long-poll costs;
//  4. then every reply is published straight to the gateway's reply queue,
//     as fast as one confirm-mode channel goes, and each waiter's wake-up
//     is timed from its reply's publish to its GET answering 200 replied.

// waiterRole is SBBENCH_ROLE of a client process of the scale mode.
const waiterRole = "waiters"

// connsPerSourceAddr is how many client connections one loopback source
// address carries; the ephemeral port range has about 28000 ports.
const connsPerSourceAddr = 5000

// maxClientProcesses bounds how many client processes the scale mode starts.
const maxClientProcesses = 64

// ScaleResult is the scale mode's figures.
type ScaleResult struct {
	Waiters int `json:"waiters"`
	// Parked is how many long-polls the gateway held with every GET sent:
	// its switchboard_waiters gauge, or, when /metrics could not be read,
	// the growth of its open files (ParkedFrom says which).
	Parked          int    `json:"parked"`
	ParkedFrom      string `json:"parked_from"`
	ClientProcesses int    `json:"client_processes"`
	// Proto is how the waiters spoke (h2c or http1); Connections how many
	// client connections the gateway held for them: the growth of its
	// switchboard_http_connections gauge from before the waiters (when only
	// the bench's metrics scrape was connected) until they were parked, so
	// whatever the gauge counts besides client connections cancels out.
	// ConnectionsGauge is the gauge as read with them parked.
	Proto            string  `json:"proto"`
	Connections      int     `json:"gateway_http_connections_parked"`
	ConnectionsGauge int     `json:"gateway_http_connections_gauge"`
	SourceAddresses  int     `json:"source_addresses"`
	OpenSeconds      float64 `json:"open_seconds"` // from the first GET until all were parked
	// The gateway's open files: its limit (soft RLIMIT_NOFILE), before the
	// waiters and with them parked.
	FDLimit   int `json:"gateway_fd_limit"`
	FDsBefore int `json:"gateway_fds_before"`
	FDsParked int `json:"gateway_fds_parked"`
	// Established is how many TCP connections to the gateway's port were
	// established (accepted or not) with the waiters parked; AcceptQueue
	// how many of them the kernel still held for it, unaccepted.
	Established      int `json:"established"`
	AcceptQueue      int `json:"accept_queue"`
	GoroutinesBefore int `json:"goroutines_before"`
	GoroutinesParked int `json:"goroutines_parked"`
	// The gateway's resident set (VmRSS) before the waiters and with them
	// parked, the growth per waiter parked, and its peak (VmHWM) from the
	// first GET until the last answer.
	RSSBeforeBytes    int64 `json:"rss_before_bytes"`
	RSSParkedBytes    int64 `json:"rss_parked_bytes"`
	RSSPerWaiterBytes int64 `json:"rss_per_waiter_bytes"`
	PeakRSSBytes      int64 `json:"peak_rss_bytes"`
	// Where it goes, from the Go runtime's figures on /metrics: the growth
	// per waiter parked of the heap in use and of the goroutine stacks.
	HeapPerWaiterBytes  int64 `json:"heap_inuse_per_waiter_bytes"`
	StackPerWaiterBytes int64 `json:"stack_inuse_per_waiter_bytes"`
	// PublishMS is how long publishing every reply took (confirms included).
	PublishMS float64 `json:"publish_ms"`
	// Wake is from a reply's publish until its GET answered 200 replied;
	// StoreToAnswer from the reply's replied_at (the storing transaction's
	// time) until then.
	Woken              int     `json:"woken"`
	WakeP50MS          float64 `json:"wake_p50_ms"`
	WakeP90MS          float64 `json:"wake_p90_ms"`
	WakeP99MS          float64 `json:"wake_p99_ms"`
	WakeMaxMS          float64 `json:"wake_max_ms"`
	StoreToAnswerP50MS float64 `json:"store_to_answer_p50_ms"`
	StoreToAnswerP99MS float64 `json:"store_to_answer_p99_ms"`
	StoreToAnswerMaxMS float64 `json:"store_to_answer_max_ms"`
	// AllStoredMS and AllWokenMS run from the last reply's publish until
	// the last reply was stored, and until the last waiter was answered.
	AllStoredMS float64 `json:"all_stored_ms"`
	AllWokenMS  float64 `json:"all_woken_ms"`
	// CPU from the first publish until the last answer: the gateway's, the
	// client processes', all of Postgres's and RabbitMQ's (by process
	// name), and the share of all CPUs busy.
	WakeSeconds            float64 `json:"wake_seconds"`
	WakeCPUSeconds         float64 `json:"wake_cpu_seconds"`
	WakeClientCPUSeconds   float64 `json:"wake_client_cpu_seconds"`
	WakePostgresCPUSeconds float64 `json:"wake_postgres_cpu_seconds"`
	WakeRabbitCPUSeconds   float64 `json:"wake_rabbitmq_cpu_seconds"`
	WakeHostCPUBusy        float64 `json:"wake_host_cpu_busy"`
	WakeOtherCPUSeconds    float64 `json:"wake_other_cpu_seconds"` // anything else on the host
	// Failed counts waiters answered with anything but their reply
	// (errors, a wait that ran out, no answer at all).
	Failed              int    `json:"failed"`
	FirstFailure        string `json:"first_failure,omitempty"`
	GatewayWarnings     int    `json:"gateway_warnings"`
	FirstGatewayWarning string `json:"first_gateway_warning,omitempty"`
}

// passed reports whether every waiter was parked and woken with its reply.
func (r *ScaleResult) passed() error {
	switch {
	case r.Failed > 0:
		return fmt.Errorf("scale: %d of %d waiters did not get their reply; first: %s", r.Failed, r.Waiters, r.FirstFailure)
	case r.Parked < r.Waiters && r.FDsParked >= r.FDLimit:
		return fmt.Errorf("scale: only %d of %d waiters were parked on the gateway at once: it ran out of open files"+
			" (RLIMIT_NOFILE %d; %d connections waited unaccepted); raise its hard limit or lower -waiters", r.Parked, r.Waiters, r.FDLimit, r.AcceptQueue)
	case r.Parked < r.Waiters:
		return fmt.Errorf("scale: only %d of %d waiters were parked on the gateway at once", r.Parked, r.Waiters)
	}
	return nil
}

// scaleSummaryLine is the scale mode's last line.
func scaleSummaryLine(r *ScaleResult) string {
	return fmt.Sprintf("bench-scale: proto=%s connections=%d waiters=%d parked=%d rss_mb=%.0f rss_per_waiter_bytes=%d wake_p50_ms=%.0f wake_p99_ms=%.0f wake_max_ms=%.0f all_woken_ms=%.0f failed=%d",
		r.Proto, r.Connections, r.Waiters, r.Parked, float64(r.RSSParkedBytes)/(1<<20), r.RSSPerWaiterBytes, r.WakeP50MS, r.WakeP99MS, r.WakeMaxMS, r.AllWokenMS, r.Failed)
}

// scaleWaitSeconds is the ?wait= of the scale mode's long-polls, and the
// gateway's SWITCHBOARD_MAX_WAIT: longer than the whole run, so only a
// reply (or the run's end) ends them.
func scaleWaitSeconds(timeout time.Duration) int { return int(math.Ceil(timeout.Seconds())) + 60 }

// rssPerWaiter is the resident set's growth per waiter parked.
func rssPerWaiter(before, parked int64, waiters int) int64 {
	if waiters <= 0 || parked <= before {
		return 0
	}
	return (parked - before) / int64(waiters)
}

// sourceAddr is the i-th loopback source address of the client
// connections: 127.0.0.2, 127.0.0.3, ..., 127.0.0.251, 127.0.1.2, ... (Linux
// routes all of 127.0.0.0/8 to lo, with no configuration).
func sourceAddr(i int) string {
	return fmt.Sprintf("127.0.%d.%d", i/250, 2+i%250)
}

// scalePlan splits the ids over client processes of at most perProcess
// each and gives each process its own source addresses.
func scalePlan(ids []string, perProcess int) (chunks [][]string, sources [][]string) {
	next := 0
	for len(ids) > 0 {
		n := min(perProcess, len(ids))
		chunks = append(chunks, ids[:n])
		ids = ids[n:]
		var addrs []string
		for range (n + connsPerSourceAddr - 1) / connsPerSourceAddr {
			addrs = append(addrs, sourceAddr(next))
			next++
		}
		sources = append(sources, addrs)
	}
	return chunks, sources
}

// raiseNoFile sets this process's soft RLIMIT_NOFILE to its hard limit,
// and tries to raise both to want first (which needs CAP_SYS_RESOURCE).
// Setting it explicitly also makes child processes inherit it: Go raises
// the soft limit by itself at start but gives children the original one.
func raiseNoFile(want uint64) (syscall.Rlimit, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return lim, err
	}
	if want > lim.Max {
		up := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			return up, nil
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return lim, err
	}
	if want > lim.Max {
		return lim, fmt.Errorf("wanted %d open files but the hard limit is %d, and raising it needs CAP_SYS_RESOURCE", want, lim.Max)
	}
	return lim, nil
}

// scale runs the scale mode against the running gateway.
func (b *bench) scale(ctx context.Context) (*ScaleResult, error) {
	o := b.opts
	pid := b.gw.pid()
	w := o.Waiters
	res := &ScaleResult{Waiters: w, Proto: o.ScaleProto}
	wait := scaleWaitSeconds(o.Timeout)

	b.log("scale: creating %d pending requests on %d clients", w, o.Clients)
	header := http.Header{"Content-Type": {"application/json"}, "Request-Timeout": {strconv.Itoa(wait + 600)}}
	t := time.Now()
	ids, err := b.http.createPending(ctx, o.Clients, w, keyScale, header)
	if err != nil {
		return nil, err
	}
	b.log("scale: %d requests created in %.1fs", w, time.Since(t).Seconds())
	// Their keep-alive connections hold files of the gateway: close them.
	// The metrics scrape keeps one connection of its own, opened now, so it
	// still works if the waiters take every file the gateway may open.
	b.http.close()
	mc := newMetricsClient(b.gw.addr)
	defer mc.close()
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	before, err := mc.scrape(ctx)
	if err != nil {
		return nil, fmt.Errorf("scrape the gateway's /metrics: %w", err)
	}
	res.GoroutinesBefore = int(before.goroutines)
	if res.RSSBeforeBytes, err = procStatusBytes(pid, "VmRSS"); err != nil {
		return nil, err
	}
	if res.FDsBefore, err = procFDs(pid); err != nil {
		return nil, err
	}
	if res.FDLimit, err = procFDLimit(pid); err != nil {
		return nil, err
	}
	// Over HTTP/1.1 each waiter needs a connection, hence a file, of its
	// own; over h2c a thousand of them share one.
	if room := res.FDLimit - res.FDsBefore; o.ScaleProto == "http1" && w > room {
		b.log("scale: WARNING the gateway may open %d files (its RLIMIT_NOFILE) and has %d open: only %d more connections fit, not %d;"+
			" the rest wait unaccepted in the listen backlog (or are refused) while it logs accept errors", res.FDLimit, res.FDsBefore, room, w)
	}
	host, portStr, err := net.SplitHostPort(b.gw.addr)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(portStr)
	gwIP := net.ParseIP(host)
	_ = resetPeakRSS(pid)

	// The client processes.
	chunks, sources := scalePlan(ids, o.WaitersPerProcess)
	res.ClientProcesses = len(chunks)
	for _, s := range sources {
		res.SourceAddresses += len(s)
	}
	b.log("scale: opening %d long-polls (GET ?wait=%d, %s) from %d client processes and %d source addresses",
		w, wait, o.ScaleProto, len(chunks), res.SourceAddresses)
	var procs []*waiterProc
	defer func() {
		for _, p := range procs {
			if err := p.stop(10 * time.Second); err != nil && !p.exited() {
				b.log("client process: %v", err)
			}
		}
	}()
	openStart := time.Now()
	for i, chunk := range chunks {
		p, err := startWaiters(waiterConfig{URL: "http://" + b.gw.addr, Auth: b.http.auth, IDs: chunk, Wait: wait, Sources: sources[i], Dialers: 256, H2C: o.ScaleProto == "h2c"})
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	totals := func() (sent, answered, failed int, err error) {
		for _, p := range procs {
			m := p.progress()
			sent, answered, failed = sent+m.Sent, answered+m.Answered, failed+m.Failed
			if p.exited() && m.Event != "result" {
				err = fmt.Errorf("a client process exited early (%v):\n%s", p.err, p.logTail())
			}
		}
		if b.gw.exited() {
			err = fmt.Errorf("the gateway exited (%v) with %d long-polls sent, %d answered:\n%s", b.gw.err, sent, answered, b.gw.logTail())
		}
		return sent, answered, failed, err
	}

	// Wait until every GET is sent and held.
	parked := func() (int, string) {
		if m, err := mc.scrape(ctx); err == nil && m.hasWaiters {
			return int(m.waiters), "metrics"
		}
		n, _ := procFDs(pid)
		return n - res.FDsBefore, "fds"
	}
	var lastSent, lastParked int
	lastChange := time.Now()
	for {
		sent, answered, _, err := totals()
		if err != nil {
			return nil, err
		}
		n, from := parked()
		if sent != lastSent || n != lastParked {
			lastSent, lastParked, lastChange = sent, n, time.Now()
		}
		if sent == w && n+answered >= w {
			break
		}
		if time.Since(lastChange) > 10*time.Second {
			b.log("scale: WARNING no progress for 10s: %d of %d GETs sent, %d parked (from %s), %d answered already", sent, w, n, from, answered)
			break
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	res.OpenSeconds = lastChange.Sub(openStart).Seconds()
	if err := sleepCtx(ctx, 2*time.Second); err != nil { // let the last handlers settle
		return nil, err
	}
	res.Parked, res.ParkedFrom = parked()
	if m, err := mc.scrape(ctx); err == nil {
		res.GoroutinesParked = int(m.goroutines)
		res.ConnectionsGauge = int(m.connections)
		res.Connections = int(m.connections - before.connections)
		res.HeapPerWaiterBytes = rssPerWaiter(int64(before.heapInuse), int64(m.heapInuse), res.Parked)
		res.StackPerWaiterBytes = rssPerWaiter(int64(before.stackInuse), int64(m.stackInuse), res.Parked)
	}
	if res.RSSParkedBytes, err = procStatusBytes(pid, "VmRSS"); err != nil {
		return nil, err
	}
	res.RSSPerWaiterBytes = rssPerWaiter(res.RSSBeforeBytes, res.RSSParkedBytes, res.Parked)
	res.FDsParked, _ = procFDs(pid)
	if st, err := tcpStats(gwIP, port); err == nil {
		res.Established, res.AcceptQueue = st.Established, st.AcceptQueue
	} else {
		b.log("scale: /proc/net/tcp: %v", err)
	}
	b.log("scale: %d parked (from %s) in %.1fs; gateway RSS %.1f MiB -> %.1f MiB, %d open files of %d, %d connections established, %d unaccepted",
		res.Parked, res.ParkedFrom, res.OpenSeconds, float64(res.RSSBeforeBytes)/(1<<20), float64(res.RSSParkedBytes)/(1<<20),
		res.FDsParked, res.FDLimit, res.Established, res.AcceptQueue)

	// Wake them all.
	b.log("scale: publishing %d replies to %s", w, b.names.ReplyQueue)
	clientCPU := func() (d time.Duration) { // as last reported: they exit once all are answered
		for _, p := range procs {
			d += p.progress().CPU
		}
		return d
	}
	services0, clients0 := commCPU(services...), clientCPU()
	m := startMeter(pid)
	pubStart := time.Now()
	sentAt, err := publishReplies(ctx, b.amqp, b.names.ReplyQueue, ids, b.payload)
	if err != nil {
		return nil, err
	}
	res.PublishMS = ms(time.Since(pubStart))
	var lastAnswered int
	lastChange = time.Now()
	for {
		_, answered, _, err := totals()
		if err != nil {
			return nil, err
		}
		if answered >= w {
			break
		}
		if answered != lastAnswered {
			lastAnswered, lastChange = answered, time.Now()
		}
		if time.Since(lastChange) > 30*time.Second {
			b.log("scale: WARNING no answer for 30s: %d of %d answered; giving up on the rest", answered, w)
			break
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	m.stop()
	res.WakeSeconds = time.Since(pubStart).Seconds()
	services1 := commCPU(services...)
	res.WakeCPUSeconds, res.WakeHostCPUBusy = m.cpu.Seconds(), m.hostBusy
	res.WakePostgresCPUSeconds = (services1["postgres"] - services0["postgres"]).Seconds()
	res.WakeRabbitCPUSeconds = (services1["beam.smp"] - services0["beam.smp"]).Seconds()
	var answers []waiterAnswer
	for _, p := range procs {
		r, err := p.finish(ctx)
		if err != nil {
			return nil, err
		}
		answers = append(answers, r...)
	}
	res.WakeClientCPUSeconds = (clientCPU() - clients0).Seconds()
	res.WakeOtherCPUSeconds = max(m.other.Seconds()-res.WakeClientCPUSeconds, 0)
	res.PeakRSSBytes, _ = procPeakRSS(pid)
	stored, err := storedTimes(ctx, b.pool, "requests", ids)
	if err != nil {
		return nil, err
	}
	ws := wakeStats(ids, sentAt, stored, answers)
	ws.fill(res)
	res.GatewayWarnings, res.FirstGatewayWarning = b.gw.warned()
	if err := purgeQueue(o.AMQPURL, b.names.SinkQueue); err != nil {
		b.log("purge %s: %v", b.names.SinkQueue, err)
	}
	return res, nil
}

// wakeFigures are the wake-up timings of one scale run.
type wakeFigures struct {
	wake, storeToAnswer  []time.Duration
	lastSent, lastStored time.Time
	lastAnswer           time.Time
	failed               int
	firstFailure         string
}

// wakeStats matches each waiter's answer with its reply's publish time
// (sent, in the order of ids) and its stored time.
func wakeStats(ids []string, sent []time.Time, stored map[string]time.Time, answers []waiterAnswer) wakeFigures {
	var f wakeFigures
	byID := make(map[string]waiterAnswer, len(answers))
	for _, a := range answers {
		byID[a.ID] = a
	}
	fail := func(msg string) {
		f.failed++
		if f.firstFailure == "" {
			f.firstFailure = msg
		}
	}
	for i, id := range ids {
		if i < len(sent) && sent[i].After(f.lastSent) {
			f.lastSent = sent[i]
		}
		if t, ok := stored[id]; ok && t.After(f.lastStored) {
			f.lastStored = t
		}
		a, ok := byID[id]
		switch {
		case !ok:
			fail("request " + id + ": no answer recorded")
			continue
		case a.Error != "":
			fail("request " + id + ": " + a.Error)
			continue
		case a.Code != http.StatusOK || a.Status != "replied":
			fail(fmt.Sprintf("request %s: answered %d with status %q", id, a.Code, a.Status))
			continue
		}
		at := time.Unix(0, a.At)
		if at.After(f.lastAnswer) {
			f.lastAnswer = at
		}
		if i < len(sent) {
			f.wake = append(f.wake, max(at.Sub(sent[i]), 0))
		}
		if t, ok := stored[id]; ok {
			f.storeToAnswer = append(f.storeToAnswer, max(at.Sub(t), 0))
		}
	}
	return f
}

func (f wakeFigures) fill(r *ScaleResult) {
	r.Woken = len(f.wake)
	wake, sta := summarize(f.wake), summarize(f.storeToAnswer)
	r.WakeP50MS, r.WakeP90MS, r.WakeP99MS, r.WakeMaxMS = ms(wake.P50), ms(wake.P90), ms(wake.P99), ms(wake.Max)
	r.StoreToAnswerP50MS, r.StoreToAnswerP99MS, r.StoreToAnswerMaxMS = ms(sta.P50), ms(sta.P99), ms(sta.Max)
	if !f.lastSent.IsZero() {
		if !f.lastStored.IsZero() {
			r.AllStoredMS = ms(max(f.lastStored.Sub(f.lastSent), 0))
		}
		if !f.lastAnswer.IsZero() {
			r.AllWokenMS = ms(max(f.lastAnswer.Sub(f.lastSent), 0))
		}
	}
	r.Failed, r.FirstFailure = f.failed, f.firstFailure
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// metricsClient scrapes the gateway's /metrics on one keep-alive
// connection of its own.
type metricsClient struct {
	url    string
	client *http.Client
}

func newMetricsClient(addr string) *metricsClient {
	tr := &http.Transport{MaxIdleConns: 1, MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
	// A slow answer must not cost the connection: once the waiters hold
	// every file the gateway may open, no new one would be accepted.
	return &metricsClient{url: "http://" + addr + "/metrics", client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (m *metricsClient) close() { m.client.CloseIdleConnections() }

// gatewayMetrics are the figures the scale mode reads from /metrics.
type gatewayMetrics struct {
	waiters, goroutines   float64
	hasWaiters            bool
	connections           float64 // switchboard_http_connections
	heapInuse, stackInuse float64 // go_memstats_*_inuse_bytes
}

func (m *metricsClient) scrape(ctx context.Context) (gatewayMetrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url, nil)
	if err != nil {
		return gatewayMetrics{}, err
	}
	res, err := m.client.Do(req)
	if err != nil {
		return gatewayMetrics{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return gatewayMetrics{}, err
	}
	if res.StatusCode != http.StatusOK {
		return gatewayMetrics{}, fmt.Errorf("GET /metrics: %s", res.Status)
	}
	var g gatewayMetrics
	g.waiters, g.hasWaiters = parseMetric(string(raw), "switchboard_waiters")
	g.goroutines, _ = parseMetric(string(raw), "go_goroutines")
	g.connections, _ = parseMetric(string(raw), "switchboard_http_connections")
	g.heapInuse, _ = parseMetric(string(raw), "go_memstats_heap_inuse_bytes")
	g.stackInuse, _ = parseMetric(string(raw), "go_memstats_stack_inuse_bytes")
	return g, nil
}

// parseMetric finds an unlabelled sample in the Prometheus text format.
func parseMetric(text, name string) (float64, bool) {
	for line := range strings.SplitSeq(text, "\n") {
		v, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.Fields(v + " x")[0], 64)
		if err != nil {
			return 0, false
		}
		return f, true
	}
	return 0, false
}

// waiterConfig is what the bench hands a client process, on its stdin.
type waiterConfig struct {
	URL     string   `json:"url"`  // the gateway's base URL
	Auth    string   `json:"auth"` // the Authorization header of every GET
	IDs     []string `json:"ids"`
	Wait    int      `json:"wait"`    // ?wait= in seconds
	Sources []string `json:"sources"` // local addresses to dial from, in turn
	Dialers int      `json:"dialers"` // connections opened at once
	H2C     bool     `json:"h2c"`     // HTTP/2 without TLS: long-polls share connections
}

// waiterMsg is one line a client process writes on its stdout.
type waiterMsg struct {
	Event    string         `json:"event"` // progress or result
	Sent     int            `json:"sent"`  // GETs written
	Answered int            `json:"answered"`
	Failed   int            `json:"failed"` // answered with something but the reply
	CPU      time.Duration  `json:"cpu"`    // the process's own CPU so far
	Answers  []waiterAnswer `json:"answers,omitempty"`
}

// waiterAnswer is how one long-poll ended.
type waiterAnswer struct {
	ID     string `json:"id"`
	At     int64  `json:"at"` // when the answer was read, Unix ns
	Code   int    `json:"code,omitempty"`
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

func (a waiterAnswer) ok() bool {
	return a.Error == "" && a.Code == http.StatusOK && a.Status == "replied"
}

// isWaiterWorker reports whether this process was started as a client
// process of the scale mode.
func isWaiterWorker() bool { return os.Getenv(roleEnv) == waiterRole }

// waiterMain is a client process's main: its config on stdin, progress and
// then the answers on stdout. Closing its stdin ends the long-polls still
// open.
func waiterMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runWaiterWorker(ctx, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "waiters:", err)
		return 1
	}
	return 0
}

func runWaiterWorker(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	dec := json.NewDecoder(stdin)
	var cfg waiterConfig
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if _, err := raiseNoFile(uint64(len(cfg.IDs)) + 64); err != nil {
		fmt.Fprintln(os.Stderr, "waiters: RLIMIT_NOFILE:", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, io.MultiReader(dec.Buffered(), stdin))
		cancel() // the bench stopped waiting
	}()

	var next atomic.Uint64
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 10 * time.Second}
		if len(cfg.Sources) > 0 {
			ip := net.ParseIP(cfg.Sources[next.Add(1)%uint64(len(cfg.Sources))])
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
		return d.DialContext(ctx, network, addr)
	}
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true, DisableCompression: true, MaxResponseHeaderBytes: 64 << 10}
	if cfg.H2C {
		// Prior-knowledge HTTP/2: the transport opens another connection
		// whenever one carries as many streams as the gateway allows.
		tr.DisableKeepAlives = false
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr} // no timeout: ?wait= and the bench bound each GET

	var (
		sent, answered, failed atomic.Int64
		answers                = make([]waiterAnswer, len(cfg.IDs))
		dialing                = make(chan struct{}, max(cfg.Dialers, 1))
		wg                     sync.WaitGroup
	)
	for i, id := range cfg.IDs {
		dialing <- struct{}{}
		if ctx.Err() != nil {
			answers[i] = waiterAnswer{ID: id, Error: "not sent: the bench stopped waiting"}
			failed.Add(1)
			<-dialing
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			release := func() { once.Do(func() { <-dialing }) }
			trace := &httptrace.ClientTrace{WroteRequest: func(info httptrace.WroteRequestInfo) {
				if info.Err == nil {
					sent.Add(1)
				}
				release()
			}}
			a := longPoll(httptrace.WithClientTrace(ctx, trace), client, cfg.URL, cfg.Auth, id, cfg.Wait)
			release()
			answers[i] = a
			answered.Add(1)
			if !a.ok() {
				failed.Add(1)
			}
		}()
	}

	enc := json.NewEncoder(stdout)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	progress := func() waiterMsg {
		cpu, _ := procCPU(os.Getpid())
		return waiterMsg{Event: "progress", Sent: int(sent.Load()), Answered: int(answered.Load()), Failed: int(failed.Load()), CPU: cpu}
	}
	for waiting := true; waiting; {
		select {
		case <-tick.C:
			if err := enc.Encode(progress()); err != nil {
				return err
			}
		case <-done:
			waiting = false
		}
	}
	msg := progress()
	msg.Event, msg.Answers = "result", answers
	return enc.Encode(msg)
}

// longPoll is one waiter: GET ?wait= on its own connection until answered.
func longPoll(ctx context.Context, client *http.Client, base, auth, id string, wait int) waiterAnswer {
	a := waiterAnswer{ID: id}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/requests/%s?wait=%d", base, id, wait), nil)
	if err != nil {
		a.Error = err.Error()
		return a
	}
	req.Header.Set("Authorization", auth)
	res, err := client.Do(req)
	if err != nil {
		a.At, a.Error = time.Now().UnixNano(), err.Error()
		if ctx.Err() != nil {
			a.Error = "no answer before the bench stopped waiting"
		}
		return a
	}
	raw, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	_ = res.Body.Close()
	a.At, a.Code = time.Now().UnixNano(), res.StatusCode
	if err != nil {
		a.Error = "read answer: " + err.Error()
		return a
	}
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		a.Error = fmt.Sprintf("%d, not a record: %.200s", res.StatusCode, raw)
		return a
	}
	a.Status = rec.Status
	return a
}

// waiterProc is the bench's handle on a client process.
type waiterProc struct {
	*child
	stdin   io.WriteCloser
	mu      sync.Mutex
	last    waiterMsg
	results chan waiterMsg
}

func startWaiters(cfg waiterConfig) (*waiterProc, error) {
	c, stdin, stdout, err := startSelf("client process", roleEnv+"="+waiterRole)
	if err != nil {
		return nil, err
	}
	p := &waiterProc{child: c, stdin: stdin, results: make(chan waiterMsg, 1)}
	readMessages(stdout, func(m waiterMsg) bool {
		p.mu.Lock()
		p.last = m
		p.mu.Unlock()
		if m.Event == "result" {
			p.results <- m
			return false
		}
		return true
	}, func() { close(p.results) })
	if err := json.NewEncoder(stdin).Encode(cfg); err != nil {
		_ = c.stop(5 * time.Second)
		return nil, fmt.Errorf("configure the client process: %w", err)
	}
	return p, nil
}

// progress is the process's last report (its result, once sent).
func (p *waiterProc) progress() waiterMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.last
	m.Answers = nil
	return m
}

// finish ends the long-polls still open and returns every answer.
func (p *waiterProc) finish(ctx context.Context) ([]waiterAnswer, error) {
	_ = p.stdin.Close()
	select {
	case m, ok := <-p.results:
		if !ok {
			<-p.done
			return nil, fmt.Errorf("client process exited (%v) without its answers:\n%s", p.err, p.logTail())
		}
		return m.Answers, nil
	case <-time.After(30 * time.Second):
		return nil, errors.New("client process sent no answers within 30s of being stopped")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// procStatusBytes reads a kB field of /proc/<pid>/status (VmRSS, VmHWM).
func procStatusBytes(pid int, field string) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", field, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// procFDs counts pid's open files.
func procFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// procFDLimit reads pid's soft limit on open files.
func procFDLimit(pid int) (int, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	return parseFDLimit(string(raw))
}

// parseFDLimit reads the soft "Max open files" of a /proc/<pid>/limits.
func parseFDLimit(text string) (int, error) {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			if f[0] == "unlimited" {
				return math.MaxInt, nil
			}
			return strconv.Atoi(f[0])
		}
	}
	return 0, errors.New("no Max open files limit")
}

// portStats are the TCP sockets of one listening address.
type portStats struct {
	Listening   bool
	Established int // connections to it, accepted or not
	AcceptQueue int // connections the kernel holds, not yet accepted
}

// tcpStats reads /proc/net/tcp for the IPv4 address ip:port.
func tcpStats(ip net.IP, port int) (portStats, error) {
	raw, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return portStats{}, err
	}
	return parseProcNetTCP(string(raw), ip, port)
}

// parseProcNetTCP counts the sockets whose local address is ip:port in a
// /proc/net/tcp (addresses as the kernel prints them: the IPv4 address as a
// little-endian hex word, the port in hex). For a listening socket,
// rx_queue is its accept queue.
func parseProcNetTCP(text string, ip net.IP, port int) (portStats, error) {
	ip4 := ip.To4()
	if ip4 == nil {
		return portStats{}, fmt.Errorf("%s is not an IPv4 address", ip)
	}
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip4[3], ip4[2], ip4[1], ip4[0], port)
	var st portStats
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[1] != local {
			continue
		}
		switch f[3] {
		case "01": // ESTABLISHED
			st.Established++
		case "0A": // LISTEN
			st.Listening = true
			_, rx, _ := strings.Cut(f[4], ":")
			n, err := strconv.ParseInt(rx, 16, 64)
			if err != nil {
				return st, fmt.Errorf("/proc/net/tcp rx_queue %q: %w", f[4], err)
			}
			st.AcceptQueue = int(n)
		}
	}
	return st, nil
}

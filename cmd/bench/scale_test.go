package main

import (
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRSSPerWaiter(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	require.Equal(t, int64(34_000), rssPerWaiter(20*mib, 20*mib+20_000*34_000, 20_000))
	require.Equal(t, int64(1), rssPerWaiter(100, 103, 2), "rounded down")
	require.Zero(t, rssPerWaiter(100*mib, 90*mib, 10), "a shrinking RSS is no cost")
	require.Zero(t, rssPerWaiter(10, 20, 0), "no waiter parked")
}

func TestScalePlan(t *testing.T) {
	t.Parallel()
	ids := make([]string, 23_000)
	for i := range ids {
		ids[i] = string(rune('a' + i%26))
	}
	chunks, sources := scalePlan(ids, 10_000)
	require.Len(t, chunks, 3)
	require.Equal(t, []int{10_000, 10_000, 3_000}, []int{len(chunks[0]), len(chunks[1]), len(chunks[2])})
	require.Equal(t, [][]string{{"127.0.0.2", "127.0.0.3"}, {"127.0.0.4", "127.0.0.5"}, {"127.0.0.6"}}, sources)
	for _, s := range sources {
		for _, a := range s {
			require.True(t, net.ParseIP(a).IsLoopback(), a)
		}
	}
	require.Equal(t, "127.0.0.251", sourceAddr(249))
	require.Equal(t, "127.0.1.2", sourceAddr(250))
}

func TestParseMetric(t *testing.T) {
	t.Parallel()
	text := `# HELP switchboard_waiters Long-polls and Prefer: wait calls held by this instance.
# TYPE switchboard_waiters gauge
switchboard_waiters_total 3
switchboard_waiters 19967
go_goroutines 39975
go_memstats_heap_inuse_bytes 6.5118208e+08
switchboard_replies_total{outcome="stored",source="amqp"} 5
`
	v, ok := parseMetric(text, "switchboard_waiters")
	require.True(t, ok)
	require.Equal(t, 19967.0, v)
	v, ok = parseMetric(text, "go_memstats_heap_inuse_bytes")
	require.True(t, ok)
	require.Equal(t, 651182080.0, v)
	_, ok = parseMetric(text, "switchboard_replies_total")
	require.False(t, ok, "labelled samples are not read")
	_, ok = parseMetric(text, "absent")
	require.False(t, ok)
}

func TestParseFDLimit(t *testing.T) {
	t.Parallel()
	limits := `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            20000                20000                files
Max locked memory         8388608              8388608              bytes
`
	n, err := parseFDLimit(limits)
	require.NoError(t, err)
	require.Equal(t, 20000, n)
	_, err = parseFDLimit("Limit Soft Hard\n")
	require.Error(t, err)
	// This process's own.
	n, err = procFDLimit(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, n)
}

func TestParseProcNetTCP(t *testing.T) {
	t.Parallel()
	// 127.0.0.1:46027 listening with 33 connections unaccepted, two
	// connections to it, one from it (a client socket on 127.0.0.2 that
	// happens to have the same port) and one elsewhere.
	text := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:B3CB 00000000:0000 0A 00000000:00000021 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:B3CB 0200007F:8001 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100007F:B3CB 0300007F:8002 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0200007F:B3CB 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
   4: 0100007F:1538 0100007F:9000 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
   5: 0100007F:B3CB 0400007F:8003 06 00000000:00000000 03:00001000 00000000     0        0 0 3 0
`
	st, err := parseProcNetTCP(text, net.ParseIP("127.0.0.1"), 46027)
	require.NoError(t, err)
	require.Equal(t, portStats{Listening: true, Established: 2, AcceptQueue: 33}, st)
	_, err = parseProcNetTCP(text, net.ParseIP("::1"), 46027)
	require.Error(t, err)

	// A real listener of this process, with one connection accepted and
	// one not.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr)
	c1, err := net.Dial("tcp", addr.String())
	require.NoError(t, err)
	defer c1.Close()
	s1, err := ln.Accept()
	require.NoError(t, err)
	defer s1.Close()
	c2, err := net.Dial("tcp", addr.String())
	require.NoError(t, err)
	defer c2.Close()
	require.Eventually(t, func() bool {
		st, err := tcpStats(addr.IP, addr.Port)
		return err == nil && st == portStats{Listening: true, Established: 2, AcceptQueue: 1}
	}, 5*time.Second, 10*time.Millisecond)
}

func TestWakeStats(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ids := []string{"a", "b", "c", "d", "e"}
	sent := []time.Time{at(0), at(1), at(2), at(3), at(4)}
	stored := map[string]time.Time{"a": at(10), "b": at(12), "c": at(14), "d": at(16)}
	answers := []waiterAnswer{
		{ID: "a", At: at(11).UnixNano(), Code: 200, Status: "replied"},
		{ID: "b", At: at(20).UnixNano(), Code: 200, Status: "replied"},
		{ID: "c", At: at(30).UnixNano(), Code: 200, Status: "pending"}, // its wait ran out
		{ID: "d", At: at(16).UnixNano(), Error: "connection reset by peer"},
		// e: no answer at all
	}
	f := wakeStats(ids, sent, stored, answers)
	require.Equal(t, []time.Duration{11 * time.Millisecond, 19 * time.Millisecond}, f.wake)
	require.Equal(t, []time.Duration{time.Millisecond, 8 * time.Millisecond}, f.storeToAnswer)
	require.Equal(t, 3, f.failed)
	require.Contains(t, f.firstFailure, `request c: answered 200 with status "pending"`)
	var r ScaleResult
	r.Waiters, r.Parked = 5, 5
	f.fill(&r)
	require.Equal(t, 2, r.Woken)
	require.Equal(t, 11.0, r.WakeP50MS)
	require.Equal(t, 19.0, r.WakeMaxMS)
	require.Equal(t, 16.0, r.AllWokenMS, "from the last publish (4 ms) to the last answer (20 ms)")
	require.Equal(t, 12.0, r.AllStoredMS, "from the last publish to the last store (16 ms)")
	require.Equal(t, 3, r.Failed)
	require.ErrorContains(t, r.passed(), "3 of 5 waiters did not get their reply")

	ok := ScaleResult{Waiters: 5, Parked: 5}
	require.NoError(t, ok.passed())
	short := ScaleResult{Waiters: 5, Parked: 4, FDsParked: 100, FDLimit: 100}
	require.ErrorContains(t, short.passed(), "ran out of open files")
}

func TestScaleSummaryLine(t *testing.T) {
	t.Parallel()
	r := &ScaleResult{Proto: "h2c", Connections: 21, Waiters: 20000, Parked: 20000, RSSParkedBytes: 700 << 20, RSSPerWaiterBytes: 34000,
		WakeP50MS: 10.4, WakeP99MS: 20.6, WakeMaxMS: 30, AllWokenMS: 40}
	require.Equal(t, "bench-scale: proto=h2c connections=21 waiters=20000 parked=20000 rss_mb=700 rss_per_waiter_bytes=34000 wake_p50_ms=10 wake_p99_ms=21 wake_max_ms=30 all_woken_ms=40 failed=0",
		scaleSummaryLine(r))
}

func TestRaiseNoFile(t *testing.T) {
	t.Parallel()
	lim, err := raiseNoFile(64)
	require.NoError(t, err)
	require.Equal(t, lim.Max, lim.Cur)
	require.GreaterOrEqual(t, lim.Cur, uint64(64))
}

// TestRunScale parks a few long-polls on a real gateway from two client
// processes and wakes them.
func TestRunScale(t *testing.T) {
	t.Parallel()
	for _, proto := range []string{"h2c", "http1"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			runScale(t, proto)
		})
	}
}

func runScale(t *testing.T, proto string) {
	o := testOptions(t, 2*time.Minute)
	o.Mode, o.Waiters, o.WaitersPerProcess, o.Clients, o.DBMaxConns = "scale", 60, 40, 4, 4
	o.ScaleProto = proto
	rep, out := runOK(t, o)
	r := rep.Scale
	require.NotNil(t, r)
	require.NoError(t, r.passed())
	require.Equal(t, 60, r.Parked)
	require.Equal(t, "metrics", r.ParkedFrom)
	require.Equal(t, 2, r.ClientProcesses)
	require.Equal(t, 60, r.Woken)
	require.Positive(t, r.RSSParkedBytes)
	require.Equal(t, proto, r.Proto)
	if proto == "h2c" {
		require.Positive(t, r.Connections)
		require.Less(t, r.Connections, 60, "the long-polls share HTTP/2 connections")
	} else {
		require.GreaterOrEqual(t, r.Established, 60)
		require.Equal(t, 60, r.Connections, "one connection per long-poll")
		require.Greater(t, r.ConnectionsGauge, r.Connections, "the gauge also counts the metrics scrape's connection")
	}
	require.LessOrEqual(t, r.WakeP50MS, r.WakeMaxMS)
	require.Regexp(t, regexp.MustCompile(`^bench-scale: proto=`+proto+` connections=\d+ waiters=60 parked=60 .* failed=0$`), scaleSummaryLine(r))
	require.Contains(t, out, "mode scale")
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	// The command name may hold spaces and parentheses.
	raw := []byte("4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 8 0 1000 100000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
	comm, cpu, err := parseStat(raw)
	require.NoError(t, err)
	require.Equal(t, "a (b) c", comm)
	require.Equal(t, 3800*time.Millisecond, cpu, "utime 250 + stime 130 ticks of 10 ms")
	_, _, err = parseStat([]byte("4242 (x) S 1 2"))
	require.Error(t, err)
	// Reaped children: cutime 7, cstime 3 (fields 16 and 17).
	withChildren := []byte("4242 (pg) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 130 7 3 20 0 8 0 1000 100000 200\n")
	require.Equal(t, 100*time.Millisecond, childrenCPU(withChildren))
	require.Zero(t, childrenCPU([]byte("4242 (x) S 1 2")))

	require.Positive(t, hostTaskCPU())
	require.Empty(t, commCPU("no-such-process-name"))
	self, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	require.Contains(t, commCPU(strings.TrimSpace(string(self))), strings.TrimSpace(string(self)))
}

package main

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// The test binary doubles as the bench binary: re-executed with
// SBBENCH_ROLE=baseline it is the baseline worker, as the bench is.
func TestMain(m *testing.M) {
	if isBaselineWorker() {
		os.Exit(baselineMain())
	}
	if isWaiterWorker() {
		os.Exit(waiterMain())
	}
	os.Exit(m.Run())
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// testOptions are the bench's defaults against the test's Postgres and
// RabbitMQ (testsvc gives the usual skip, or under CI fail, when one is
// missing; the bench creates its own database beside the test's), bounded
// by timeout and logging its progress to t.
func testOptions(t *testing.T, timeout time.Duration) Options {
	o := DefaultOptions()
	o.PostgresURL, o.AMQPURL = testsvc.Database(t), testsvc.AMQPURL(t)
	o.Timeout = timeout
	o.Progress = testLog{t}
	return o
}

// runOK runs the bench with o, requires it to succeed and logs what it
// wrote, which it returns with the report.
func runOK(t *testing.T, o Options) (*Report, string) {
	var out strings.Builder
	rep, err := run(context.Background(), o, &out)
	require.NoError(t, err, out.String())
	t.Log("\n" + out.String())
	return rep, out.String()
}

// TestRunAllModes runs the whole bench with tiny numbers against the real
// services: every mode reports plausible figures, the gateway really stored
// what it answered, and nothing the run created is left behind.
func TestRunAllModes(t *testing.T) {
	t.Parallel()
	o := testOptions(t, 3*time.Minute)
	pgURL, amqpURL := o.PostgresURL, o.AMQPURL
	o.Clients, o.Requests, o.Warmup, o.Responders, o.DBMaxConns = 4, 50, 10, 1, 4
	const total = 60 // warm-up + measured, per mode

	var dbName string
	o.inspect = func(ctx context.Context, dbURL string) error {
		conn, err := pgx.Connect(ctx, dbURL)
		require.NoError(t, err)
		defer conn.Close(ctx)
		dbName = conn.Config().Database
		count := func(table, key, status string) int {
			var n int
			require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE routing_key = $1 AND status = $2`, key, status).Scan(&n))
			return n
		}
		// Independent of the bench's own bookkeeping: what the gateway and
		// the baseline committed.
		require.Equal(t, total, count("requests", keyLongpoll, "replied"))
		require.Equal(t, total, count("requests", keyPrefer, "replied"))
		require.Equal(t, total, count("requests", keyIntake, "pending"))
		require.Equal(t, total, count("requests", keyReplies, "replied"))
		require.Equal(t, total, count(baselineTable, keyBaseline, "replied"))
		require.Equal(t, total, count(baselineTable, keyBaseIn, "pending"))
		require.Equal(t, total, count(baselineTable, keyBaseRep, "replied"))
		var replyBody []byte
		require.NoError(t, conn.QueryRow(ctx, `SELECT reply_body FROM requests WHERE routing_key = $1 LIMIT 1`, keyLongpoll).Scan(&replyBody))
		require.Contains(t, string(replyBody), "Everything is awesome")
		require.Contains(t, string(replyBody), "46371a70b2cf3953b12b3e0bf8a83ea2")
		var dead int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&dead))
		require.Zero(t, dead)
		return nil
	}

	rep, _ := runOK(t, o)
	require.NotEmpty(t, dbName, "the inspection ran")

	require.Len(t, rep.Modes, 4)
	for i, mode := range []string{"longpoll", "prefer", "intake", "replies"} {
		m := rep.Modes[i]
		require.Equal(t, mode, m.Mode)
		for name, s := range map[string]*Side{"gateway": m.Gateway, "baseline": m.Baseline} {
			require.NotNil(t, s, "%s %s", mode, name)
			require.Zero(t, s.Errors, "%s %s: %s", mode, name, s.FirstError)
			require.Equal(t, o.Requests, s.Requests, "%s %s", mode, name)
			require.Positive(t, s.RPS, "%s %s", mode, name)
			require.Positive(t, s.P50MS, "%s %s", mode, name)
			require.LessOrEqual(t, s.P50MS, s.P90MS, "%s %s", mode, name)
			require.LessOrEqual(t, s.P90MS, s.P99MS, "%s %s", mode, name)
			require.LessOrEqual(t, s.P99MS, s.MaxMS, "%s %s", mode, name)
			// A median request takes less than the whole phase.
			require.Less(t, s.P50MS/1000, s.Seconds, "%s %s", mode, name)
			require.Equal(t, total, s.StoredWant, "%s %s", mode, name)
			require.Equal(t, total, s.Stored, "%s %s", mode, name)
			require.GreaterOrEqual(t, s.CPUSeconds, 0.0, "%s %s", mode, name)
			require.Greater(t, s.PeakRSSMiB, 1.0, "%s %s", mode, name)
		}
		require.InDelta(t, m.Gateway.RPS/m.Baseline.RPS, m.Ratio, 1e-9)
	}
	require.Equal(t, "longpoll", rep.Summary.Mode)
	require.Equal(t, rep.Modes[0].Gateway.RPS, rep.Summary.GatewayRPS)
	require.Equal(t, rep.Modes[0].Baseline.RPS, rep.Summary.BaselineRPS)
	require.Regexp(t, regexp.MustCompile(`^bench: ratio=\d+\.\d\d gateway_rps=\d+ baseline_rps=\d+ p99_ms=\d+$`), summaryLine(rep.Summary))

	// Nothing is left behind: neither the database nor any queue.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var exists bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, dbName).Scan(&exists))
	require.False(t, exists, "database %s was dropped", dbName)
	prefix := "sbbench." + strings.TrimPrefix(dbName, "sbbench_")
	ac, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer ac.Close()
	for _, q := range []string{".replies", ".echo", ".sink", ".baseline.replies", ".baseline.echo", ".dead-letters"} {
		ch, err := ac.Channel()
		require.NoError(t, err)
		_, err = ch.QueueDeclarePassive(prefix+q, true, false, false, false, nil)
		require.Error(t, err, "queue %s was deleted", prefix+q)
	}
}

func TestOptionsRefuseRemoteServices(t *testing.T) {
	t.Parallel()
	o := DefaultOptions()
	require.NoError(t, o.validate())
	o.PostgresURL = "postgres://postgres@db.example.com:5432/postgres"
	require.ErrorContains(t, o.validate(), "loopback")
	o = DefaultOptions()
	o.AMQPURL = "amqp://guest:guest@10.0.0.7:5672/"
	require.ErrorContains(t, o.validate(), "loopback")
	o = DefaultOptions()
	o.Mode = "fast"
	require.Error(t, o.validate())
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	var lats []time.Duration
	for i := 100; i >= 1; i-- {
		lats = append(lats, time.Duration(i)*time.Millisecond)
	}
	s := summarize(lats)
	require.Equal(t, 50*time.Millisecond, s.P50)
	require.Equal(t, 90*time.Millisecond, s.P90)
	require.Equal(t, 99*time.Millisecond, s.P99)
	require.Equal(t, 100*time.Millisecond, s.Max)
	require.Equal(t, time.Duration(100), lats[0]/time.Millisecond, "the input is left unsorted")
	require.Equal(t, latencySummary{}, summarize(nil))
}

func TestPayloadSize(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 50, 256, 4096} {
		p := payload(size)
		require.Contains(t, string(p), `"Workflow":"46371a70b2cf3953b12b3e0bf8a83ea2"`)
		if size > 200 {
			require.Len(t, p, size)
		}
	}
}

func TestProcReadings(t *testing.T) {
	t.Parallel()
	cpu, err := procCPU(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, cpu, time.Duration(0))
	rss, err := procPeakRSS(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, rss, int64(1<<20))
	busy, total := hostCPU()
	require.Greater(t, total, busy)
}

package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

func TestBrokerDownRequestsAreQueuedThenPublished(t *testing.T) {
	t.Parallel()
	amqpURL := testsvc.AMQPURL(t)
	proxy := testsvc.NewProxy(t, testsvc.HostOf(t, amqpURL))
	proxy.Cut()
	b := setup(t, options{amqpURL: testsvc.WithHost(t, amqpURL, proxy.Addr()), noBroker: true})
	b.echo(t, "echo", "workflow.#") // the responder reaches the broker directly

	requireProblem(t, b.do(t, "GET", "/readyz", nil, ""), 503, "not-ready")
	res := b.do(t, "POST", "/workflow/create", jsonCT, seedBody)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	require.Equal(t, "queued", res.json(t)["status"])
	id := res.header.Get("Message-ID")

	proxy.Restore()
	rec := b.do(t, "GET", "/v1/requests/"+id+"?wait=15", nil, "").json(t)
	require.Equal(t, "replied", rec["status"], "the outbox relay publishes the queued request once the broker is back")
	require.Equal(t, 200, b.do(t, "GET", "/readyz", nil, "").status)
}

func TestBrokerConnectionCutRecovers(t *testing.T) {
	t.Parallel()
	amqpURL := testsvc.AMQPURL(t)
	proxy := testsvc.NewProxy(t, testsvc.HostOf(t, amqpURL))
	b := setup(t, options{amqpURL: testsvc.WithHost(t, amqpURL, proxy.Addr())})
	b.echo(t, "echo", "workflow.#")

	first := b.do(t, "POST", "/workflow/create", with(jsonCT, "Prefer", "wait=10"), `{"round": 1}`)
	require.Equal(t, 200, first.status)

	proxy.Cut()
	require.Eventually(t, func() bool { return !b.gw.Connected() }, 5*time.Second, 10*time.Millisecond)
	// A reply arriving while the gateway is away waits in the durable reply queue.
	id := b.open(t, nil)
	b.reply(t, id, `{"while": "away"}`, nil)
	proxy.Restore()
	require.Eventually(t, b.gw.Connected, 10*time.Second, 10*time.Millisecond, "publisher and consumers reconnect")

	rec := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "").json(t)
	require.Equal(t, "replied", rec["status"], "the reply consumer recovered")
	second := b.do(t, "POST", "/workflow/create", with(jsonCT, "Prefer", "wait=10"), `{"round": 2}`)
	require.Equal(t, 200, second.status, "the publisher recovered")
}

func TestPostgresDownAnswers503AndRepliesWait(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	proxy := testsvc.NewProxy(t, testsvc.HostOf(t, dbURL))
	b := setup(t, options{dbURL: testsvc.WithHost(t, dbURL, proxy.Addr())})
	id := b.open(t, nil)

	proxy.Cut()
	res := b.do(t, "POST", "/open/request", jsonCT, `{}`)
	requireProblem(t, res, 503, "unavailable")
	require.Equal(t, "5", res.header.Get("Retry-After"))
	requireProblem(t, b.do(t, "GET", "/readyz", nil, ""), 503, "not-ready")

	// A reply that cannot be stored is not acked: it stays on the broker
	// (redelivered every second) and nothing is written meanwhile.
	b.reply(t, id, `{"stored": "later"}`, nil)
	time.Sleep(1500 * time.Millisecond)
	direct, err := pgx.Connect(context.Background(), dbURL)
	require.NoError(t, err)
	defer direct.Close(context.Background())
	var status string
	require.NoError(t, direct.QueryRow(context.Background(), `SELECT status FROM requests WHERE id = $1`, id).Scan(&status))
	require.Equal(t, "pending", status)
	proxy.Restore()

	rec := b.do(t, "GET", "/v1/requests/"+id+"?wait=15", nil, "").json(t)
	require.Equal(t, "replied", rec["status"], "the requeued reply is stored once Postgres is back")
	require.Equal(t, "later", rec["reply"].(map[string]any)["body"].(map[string]any)["stored"])
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM requests`), "the refused POST wrote nothing")
}

// A gateway that died between committing a request and publishing it left
// a queued row behind; the relay of any instance publishes it once its
// grace period has passed, and it completes like any other.
func TestCommittedButUnpublishedRequestIsRelayed(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.echo(t, "echo", "workflow.#")
	id := uuid.New()
	_, err := b.pool.Exec(context.Background(), `
		INSERT INTO requests (id, routing_key, status, time_ms, expires_at, body, body_sha256, next_attempt_at)
		VALUES ($1, 'workflow.create', 'queued', 1, now() + interval '1 minute', '{"orphaned": true}', '\x00', now())`, id)
	require.NoError(t, err)
	rec := b.do(t, "GET", "/v1/requests/"+id.String()+"?wait=10", nil, "").json(t)
	require.Equal(t, "replied", rec["status"])
	require.Equal(t, true, rec["reply"].(map[string]any)["body"].(map[string]any)["request"].(map[string]any)["orphaned"])
}

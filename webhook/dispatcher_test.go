package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/webhook"
	"github.com/switchboard-gw/switchboard/webhook/signature"
)

// The dispatcher's tests run against the real Postgres, with receivers on
// loopback that the policy allow-lists. Requests are created and ended
// through the correlation store, so the enqueue trigger makes the
// deliveries exactly as in production.

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

type hookEnv struct {
	dbURL string
	pool  *pgxpool.Pool
	store *correlation.Store
}

func newHookEnv(t *testing.T) hookEnv {
	t.Helper()
	dbURL := testsvc.Database(t)
	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return hookEnv{dbURL: dbURL, pool: pool, store: correlation.NewStore(pool, testLog())}
}

func testLog() *slog.Logger {
	if os.Getenv("SWITCHBOARD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// replied creates a request with Reply-To url and stores its reply.
func (e hookEnv) replied(t *testing.T, url string) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	id := uuid.New()
	_, _, err := e.store.Create(ctx, correlation.NewRequest{
		ID: id, RoutingKey: "workflow.create", Time: time.Now().UnixMilli(), ExpiresAt: time.Now().Add(time.Hour),
		ReplyTo: url, Body: []byte(`{"Workflow":"46371a70b2cf3953b12b3e0bf8a83ea2"}`), PublishAfter: time.Now().Add(time.Hour),
	})
	require.NoError(t, err)
	out, err := e.store.StoreReply(ctx, correlation.IncomingReply{
		CorrelationID: id.String(), MessageID: uuid.NewString(), Time: time.Now().UnixMilli(),
		Body: []byte(`{"result":"Everything is awesome"}`), Source: "http",
	})
	require.NoError(t, err)
	require.Equal(t, correlation.OutcomeStored, out)
	return id
}

type dispatcherOpts struct {
	schedule []time.Duration
	timeout  time.Duration
	workers  int
	guard    *webhook.Guard
	receipts webhook.Receipts
	pool     *pgxpool.Pool
}

// loopbackPolicy lets the tests reach their receivers on 127.0.0.1.
func loopbackPolicy() webhook.Policy {
	return webhook.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
}

// start runs a dispatcher (one gateway instance) until the test ends or
// the returned stop is called.
func (e hookEnv) start(t *testing.T, o dispatcherOpts) (*webhook.Dispatcher, *webhook.Metrics, func()) {
	t.Helper()
	secret, err := signature.ParseSecret(testSecret)
	require.NoError(t, err)
	cfg := webhook.DefaultConfig()
	cfg.Secrets = []signature.Secret{secret}
	cfg.Schedule = []time.Duration{0, 200 * time.Millisecond, 400 * time.Millisecond}
	if o.schedule != nil {
		cfg.Schedule = o.schedule
	}
	cfg.Jitter = 0
	cfg.Timeout = 5 * time.Second
	if o.timeout > 0 {
		cfg.Timeout = o.timeout
	}
	if o.workers > 0 {
		cfg.Workers = o.workers
	}
	cfg.PollInterval = 100 * time.Millisecond
	guard := o.guard
	if guard == nil {
		guard = webhook.NewGuard(loopbackPolicy(), nil, nil)
	}
	pool := o.pool
	if pool == nil {
		pool = e.pool
	}
	m := webhook.NewMetrics(nil)
	d, err := webhook.NewDispatcher(cfg, pool, e.store, o.receipts, webhook.NewClient(guard, cfg.Timeout), m, testLog())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return d, m, stop
}

// receiver is a webhook endpoint on loopback that answers with the next
// of its scripted statuses (the last one repeats) and keeps every call.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	calls  []call
	script []func(w http.ResponseWriter)
}

type call struct {
	at     time.Time
	header http.Header
	body   []byte
}

func status(code int) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) { w.WriteHeader(code) }
}

func newReceiver(t *testing.T, script ...func(w http.ResponseWriter)) *receiver {
	t.Helper()
	r := &receiver{script: script}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		n := len(r.calls)
		r.calls = append(r.calls, call{at: time.Now(), header: req.Header.Clone(), body: body})
		step := r.script[min(n, len(r.script)-1)]
		r.mu.Unlock()
		step(w)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) got() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// waitState waits until the delivery of id is in state want.
func waitState(t *testing.T, s *webhook.Store, id uuid.UUID, want string, within time.Duration) webhook.Delivery {
	t.Helper()
	var d webhook.Delivery
	require.Eventually(t, func() bool {
		var err error
		d, err = s.Get(context.Background(), id)
		return err == nil && d.State == want
	}, within, 20*time.Millisecond, "delivery of %s never became %s (last: %+v)", id, want, d)
	return d
}

func TestDeliversTheSignedRecord(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t)
	rcv := newReceiver(t, status(http.StatusNoContent))
	d, m, _ := e.start(t, dispatcherOpts{})
	id := e.replied(t, rcv.URL+"/hooks/1")

	del := waitState(t, d.Store(), id, webhook.StateDelivered, 10*time.Second)
	require.Equal(t, 1, del.Attempts)
	require.Equal(t, http.StatusNoContent, *del.LastStatus)
	require.NotNil(t, del.DoneAt)

	calls := rcv.got()
	require.Len(t, calls, 1)
	c := calls[0]
	require.Equal(t, id.String(), c.header.Get("webhook-id"), "the request id is the idempotency key")
	require.Equal(t, "application/json", c.header.Get("Content-Type"))
	secret, _ := signature.ParseSecret(testSecret)
	require.NoError(t, signature.Verify(c.header, c.body, time.Now(), 0, secret))
	verifyWithStandardWebhooks(t, testSecret, c.header, c.body, true)
	verifyWithStandardWebhooks(t, testSecret, c.header, append(c.body[:len(c.body):len(c.body)], ' '), false)

	var env struct {
		Type      string    `json:"type"`
		Timestamp time.Time `json:"timestamp"`
		Data      struct {
			ID      string          `json:"id"`
			Status  string          `json:"status"`
			ReplyTo string          `json:"reply_to"`
			Request json.RawMessage `json:"request"`
			Reply   struct {
				Body json.RawMessage `json:"body"`
			} `json:"reply"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(c.body, &env))
	require.Equal(t, "request.replied", env.Type)
	require.Equal(t, id.String(), env.Data.ID)
	require.Equal(t, "replied", env.Data.Status)
	require.Equal(t, rcv.URL+"/hooks/1", env.Data.ReplyTo)
	require.JSONEq(t, `{"result":"Everything is awesome"}`, string(env.Data.Reply.Body))
	require.WithinDuration(t, time.Now(), env.Timestamp, time.Minute)

	attempts, err := d.Store().Attempts(context.Background(), id)
	require.NoError(t, err)
	require.Len(t, attempts, 1)
	require.Equal(t, webhook.OutcomeDelivered, attempts[0].Outcome)
	require.Equal(t, http.StatusNoContent, *attempts[0].HTTPStatus)
	require.Equal(t, 1.0, testutil.ToFloat64(m.Attempts.WithLabelValues(webhook.OutcomeDelivered)))
}

// Every way a request ends is delivered, not only replies.
func TestDeliversEveryOutcome(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t)
	rcv := newReceiver(t, status(http.StatusOK))
	d, _, _ := e.start(t, dispatcherOpts{})
	ctx := context.Background()
	create := func(timeout time.Duration) uuid.UUID {
		id := uuid.New()
		_, _, err := e.store.Create(ctx, correlation.NewRequest{ID: id, RoutingKey: "a.b", Time: 1,
			ExpiresAt: time.Now().Add(timeout), ReplyTo: rcv.URL, Body: []byte(`{}`), PublishAfter: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		return id
	}
	cancelled := create(time.Hour)
	_, err := e.store.Cancel(ctx, cancelled)
	require.NoError(t, err)
	unroutable := create(time.Hour)
	require.NoError(t, e.store.MarkUnroutable(ctx, unroutable))
	expired := create(time.Millisecond)
	time.Sleep(5 * time.Millisecond)
	_, err = e.store.ExpireDue(ctx)
	require.NoError(t, err)
	failed := create(time.Hour)
	_, err = e.store.StoreReply(ctx, correlation.IncomingReply{CorrelationID: failed.String(), Body: []byte(`{"error":"boom"}`), Failed: true, Source: "http"})
	require.NoError(t, err)
	open := create(time.Hour)

	for id, typ := range map[uuid.UUID]string{cancelled: "request.cancelled", unroutable: "request.unroutable",
		expired: "request.expired", failed: "request.failed"} {
		del := waitState(t, d.Store(), id, webhook.StateDelivered, 10*time.Second)
		require.Equal(t, typ, del.EventType)
	}
	_, err = d.Store().Get(ctx, open)
	require.ErrorIs(t, err, webhook.ErrNoDelivery, "an open request has nothing to deliver yet")
	require.Len(t, rcv.got(), 4)
}

// A 500, a timeout and a refused connection are each retried on the
// schedule; a run-out schedule gives up with a dead letter.
func TestRetriesFollowTheSchedule(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t)
	schedule := []time.Duration{0, 300 * time.Millisecond, 600 * time.Millisecond}
	d, m, _ := e.start(t, dispatcherOpts{schedule: schedule, timeout: 400 * time.Millisecond})
	ctx := context.Background()

	t.Run("500 then 200", func(t *testing.T) {
		rcv := newReceiver(t, status(500), status(503), status(200))
		id := e.replied(t, rcv.URL)
		waitState(t, d.Store(), id, webhook.StateDelivered, 10*time.Second)
		calls := rcv.got()
		require.Len(t, calls, 3)
		for i := 1; i < 3; i++ {
			require.GreaterOrEqual(t, calls[i].at.Sub(calls[i-1].at), schedule[i], "attempt %d came early", i+1)
			require.Equal(t, calls[0].header.Get("webhook-id"), calls[i].header.Get("webhook-id"), "the id is stable across retries")
			require.Equal(t, calls[0].body, calls[i].body, "the payload is the same bytes on every attempt")
		}
		attempts, err := d.Store().Attempts(ctx, id)
		require.NoError(t, err)
		require.Len(t, attempts, 3)
		require.Equal(t, []string{webhook.OutcomeRetry, webhook.OutcomeRetry, webhook.OutcomeDelivered},
			[]string{attempts[0].Outcome, attempts[1].Outcome, attempts[2].Outcome})
		require.Equal(t, 500, *attempts[0].HTTPStatus)
		require.Equal(t, "the receiver answered 500", attempts[0].Error)
	})

	t.Run("timeout then 200", func(t *testing.T) {
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		rcv := newReceiver(t, func(w http.ResponseWriter) {
			select {
			case <-release:
			case <-time.After(2 * time.Second):
			}
		}, status(200))
		id := e.replied(t, rcv.URL)
		waitState(t, d.Store(), id, webhook.StateDelivered, 10*time.Second)
		attempts, err := d.Store().Attempts(ctx, id)
		require.NoError(t, err)
		require.Len(t, attempts, 2)
		require.Nil(t, attempts[0].HTTPStatus)
		require.Contains(t, attempts[0].Error, "no complete answer within 400ms")
		require.Less(t, attempts[0].Duration, time.Second, "the attempt timeout cut it short")
		require.GreaterOrEqual(t, attempts[1].StartedAt.Sub(attempts[0].StartedAt), schedule[1])
	})

	t.Run("connection refused until it gives up", func(t *testing.T) {
		url := "http://" + testsvc.FreeAddr(t) + "/hook" // nothing listens there
		id := e.replied(t, url)
		del := waitState(t, d.Store(), id, webhook.StateFailed, 10*time.Second)
		require.Equal(t, len(schedule), del.Attempts)
		attempts, err := d.Store().Attempts(ctx, id)
		require.NoError(t, err)
		require.Len(t, attempts, len(schedule))
		for i, a := range attempts {
			require.Contains(t, a.Error, "connection refused")
			want := webhook.OutcomeRetry
			if i == len(attempts)-1 {
				want = webhook.OutcomeFailed
			}
			require.Equal(t, want, a.Outcome)
			if i > 0 {
				require.GreaterOrEqual(t, a.StartedAt.Sub(attempts[i-1].StartedAt), schedule[i])
			}
		}
		dead, err := e.store.DeadLetters(ctx, id.String())
		require.NoError(t, err)
		require.Len(t, dead, 1)
		require.Equal(t, "webhook_failed", dead[0].Reason)
		require.Equal(t, "exhausted", dead[0].Headers["cause"])
		require.Equal(t, 1.0, testutil.ToFloat64(m.GaveUp.WithLabelValues("exhausted")))

		// An operator fixes the receiver and retries by hand: the
		// schedule starts over and the delivery succeeds.
		rcv := newReceiver(t, status(200))
		_, err = e.pool.Exec(ctx, `UPDATE webhook_deliveries SET url = $2 WHERE request_id = $1`, id, rcv.URL)
		require.NoError(t, err)
		del, err = d.Store().Retry(ctx, id)
		require.NoError(t, err)
		require.Equal(t, webhook.StatePending, del.State)
		d.Nudge()
		del = waitState(t, d.Store(), id, webhook.StateDelivered, 10*time.Second)
		require.Equal(t, len(schedule)+1, del.Attempts)
		_, err = d.Store().Retry(ctx, id)
		require.ErrorIs(t, err, webhook.ErrNotRetryable)
	})
}

func TestGoneStopsRetries(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t)
	rcv := newReceiver(t, status(http.StatusGone), status(http.StatusOK))
	d, m, _ := e.start(t, dispatcherOpts{schedule: []time.Duration{0, 50 * time.Millisecond, 50 * time.Millisecond}})
	id := e.replied(t, rcv.URL)
	del := waitState(t, d.Store(), id, webhook.StateFailed, 10*time.Second)
	require.Equal(t, 1, del.Attempts)
	time.Sleep(300 * time.Millisecond) // well past when a retry would have come
	require.Len(t, rcv.got(), 1, "410 is never retried")
	require.Equal(t, 1.0, testutil.ToFloat64(m.GaveUp.WithLabelValues("gone")))
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t)
	rcv := newReceiver(t, func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	}, status(http.StatusOK))
	d, _, _ := e.start(t, dispatcherOpts{schedule: []time.Duration{0, 50 * time.Millisecond}})
	id := e.replied(t, rcv.URL)
	waitState(t, d.Store(), id, webhook.StateDelivered, 10*time.Second)
	calls := rcv.got()
	require.Len(t, calls, 2)
	require.GreaterOrEqual(t, calls[1].at.Sub(calls[0].at), time.Second, "the receiver asked for 1 s")
}

// A gateway that stops between attempts, and one that dies in the middle
// of one: another instance (a new dispatcher on its own pool) carries the
// delivery on.
func TestDeliveryResumesAfterARestart(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t)
	ctx := context.Background()

	t.Run("stopped between attempts", func(t *testing.T) {
		rcv := newReceiver(t, status(500), status(200))
		schedule := []time.Duration{0, 700 * time.Millisecond}
		d, _, stop := e.start(t, dispatcherOpts{schedule: schedule})
		id := e.replied(t, rcv.URL)
		require.Eventually(t, func() bool {
			del, err := d.Store().Get(ctx, id)
			return err == nil && del.Attempts == 1
		}, 10*time.Second, 10*time.Millisecond)
		stop()

		pool2, err := pgxpool.New(ctx, e.dbURL)
		require.NoError(t, err)
		t.Cleanup(pool2.Close)
		d2, _, _ := e.start(t, dispatcherOpts{schedule: schedule, pool: pool2})
		waitState(t, d2.Store(), id, webhook.StateDelivered, 10*time.Second)
		calls := rcv.got()
		require.Len(t, calls, 2)
		require.GreaterOrEqual(t, calls[1].at.Sub(calls[0].at), schedule[1])
	})

	t.Run("died mid-attempt", func(t *testing.T) {
		rcv := newReceiver(t, status(200))
		// Nothing runs yet: the delivery waits, due.
		id := e.replied(t, rcv.URL)
		// An instance claims it and dies before recording anything: its
		// lease (here 300 ms) is left behind.
		dead := webhook.NewStore(e.pool)
		claimed, err := dead.ClaimForTest(ctx, 10, 300*time.Millisecond)
		require.NoError(t, err)
		require.Len(t, claimed, 1)

		d, _, _ := e.start(t, dispatcherOpts{})
		time.Sleep(150 * time.Millisecond)
		require.Empty(t, rcv.got(), "a leased delivery is not attempted by another instance")
		waitState(t, d.Store(), id, webhook.StateDelivered, 10*time.Second)
		require.Len(t, rcv.got(), 1)
	})
}

// Two instances share one backlog: every delivery is attempted exactly
// once.
func TestTwoInstancesNeverDeliverTheSameAttemptTwice(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t)
	ctx := context.Background()
	var mu sync.Mutex
	seen := map[string]int{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("webhook-id")]++
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}))
	t.Cleanup(rcv.Close)

	const n = 200
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = e.replied(t, rcv.URL)
	}
	pool2, err := pgxpool.New(ctx, e.dbURL)
	require.NoError(t, err)
	t.Cleanup(pool2.Close)
	_, m1, _ := e.start(t, dispatcherOpts{workers: 4})
	_, m2, _ := e.start(t, dispatcherOpts{workers: 4, pool: pool2})

	require.Eventually(t, func() bool {
		var pending int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE state <> 'delivered'`).Scan(&pending)
		return err == nil && pending == 0
	}, 30*time.Second, 50*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, n)
	for id, times := range seen {
		require.Equal(t, 1, times, "webhook %s was delivered %d times", id, times)
	}
	a1 := testutil.ToFloat64(m1.Attempts.WithLabelValues(webhook.OutcomeDelivered))
	a2 := testutil.ToFloat64(m2.Attempts.WithLabelValues(webhook.OutcomeDelivered))
	require.Equal(t, float64(n), a1+a2)
	require.Positive(t, a1, "both instances took part")
	require.Positive(t, a2, "both instances took part")
}

// loopbackOnly is the tests' last dial: it connects to 127.0.0.1 and
// records, without connecting, anything else the guard let through.
type loopbackOnly struct {
	mu       sync.Mutex
	other    []string
	loopback []string
}

func (l *loopbackOnly) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	l.mu.Lock()
	if host == "127.0.0.1" {
		l.loopback = append(l.loopback, addr)
	}
	l.mu.Unlock()
	if host != "127.0.0.1" {
		l.mu.Lock()
		l.other = append(l.other, addr)
		l.mu.Unlock()
		return nil, errors.New("test: not dialling " + addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

type mapResolver map[string][]netip.Addr

func (m mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := m[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// A delivery to an internal address gives up at once, with no connection
// made: loopback (where a real receiver listens, and hears nothing), other
// literal internal addresses, a name that resolves to one, and a redirect
// to one from an allowed receiver.
func TestInternalAddressesAreNeverContacted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	resolver := mapResolver{"hooks.internal.example": {netip.MustParseAddr("10.1.2.3")}}

	t.Run("addresses", func(t *testing.T) {
		t.Parallel()
		e := newHookEnv(t)
		local := newReceiver(t, status(http.StatusOK)) // on 127.0.0.1, which this policy does not allow
		dialer := &loopbackOnly{}
		guard := webhook.NewGuard(webhook.Policy{}, resolver, dialer.dial)
		d, m, _ := e.start(t, dispatcherOpts{guard: guard, schedule: []time.Duration{0}})
		urls := []string{
			local.URL + "/hook", "http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data",
			"http://[::1]:9/hook", "http://[::ffff:127.0.0.1]:9/hook", "http://hooks.internal.example/hook",
		}
		for _, url := range urls {
			id := e.replied(t, url)
			del := waitState(t, d.Store(), id, webhook.StateFailed, 10*time.Second)
			require.Equal(t, 1, del.Attempts, url)
			require.Contains(t, del.LastError, "webhook:", url)
			dead, err := e.store.DeadLetters(ctx, id.String())
			require.NoError(t, err)
			require.Len(t, dead, 1, url)
			require.Equal(t, "blocked", dead[0].Headers["cause"], url)
		}
		require.Equal(t, float64(len(urls)), testutil.ToFloat64(m.GaveUp.WithLabelValues("blocked")))
		require.Empty(t, local.got(), "the loopback receiver was contacted")
		dialer.mu.Lock()
		defer dialer.mu.Unlock()
		require.Empty(t, dialer.other, "the guard let a connection to an internal address through")
		require.Empty(t, dialer.loopback, "the guard let a connection to loopback through")
	})

	t.Run("redirect", func(t *testing.T) {
		t.Parallel()
		e := newHookEnv(t)
		redirect := newReceiver(t, func(w http.ResponseWriter) {
			w.Header().Set("Location", "http://10.0.0.1/hook")
			w.WriteHeader(http.StatusFound)
		})
		dialer := &loopbackOnly{}
		guard := webhook.NewGuard(loopbackPolicy(), resolver, dialer.dial)
		d, _, _ := e.start(t, dispatcherOpts{guard: guard, schedule: []time.Duration{0}})
		id := e.replied(t, redirect.URL)
		del := waitState(t, d.Store(), id, webhook.StateFailed, 10*time.Second)
		require.Equal(t, http.StatusFound, *del.LastStatus)
		require.Contains(t, del.LastError, "redirects are not followed")
		require.Len(t, redirect.got(), 1)
		dialer.mu.Lock()
		defer dialer.mu.Unlock()
		require.Empty(t, dialer.other, "the redirect was followed")
	})
}

// Retention keeps a request whose webhook is still being delivered, and a
// delivered one for the retention period after its delivery ended.
func TestRetentionKeepsRequestsWithPendingDeliveries(t *testing.T) {
	t.Parallel()
	e := newHookEnv(t)
	ctx := context.Background()
	id := e.replied(t, "http://127.0.0.1:9/never-attempted")
	age := func(table, key string) {
		_, err := e.pool.Exec(ctx, `UPDATE `+table+` SET updated_at = now() - interval '2 hours' WHERE `+key+` = $1`, id)
		require.NoError(t, err)
	}
	exists := func() bool {
		var n int
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM requests WHERE id = $1`, id).Scan(&n))
		return n == 1
	}
	age("requests", "id")
	_, err := e.store.Purge(ctx, time.Hour, 100)
	require.NoError(t, err)
	require.True(t, exists(), "a pending delivery keeps its request")

	_, err = e.pool.Exec(ctx, `UPDATE webhook_deliveries SET state = 'delivered', done_at = now() WHERE request_id = $1`, id)
	require.NoError(t, err)
	_, err = e.store.Purge(ctx, time.Hour, 100)
	require.NoError(t, err)
	require.True(t, exists(), "a delivery that ended within the retention period keeps its request")

	age("webhook_deliveries", "request_id")
	_, err = e.store.Purge(ctx, time.Hour, 100)
	require.NoError(t, err)
	require.False(t, exists(), "purged once the delivery is as old as the retention")
	var n int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE request_id = $1`, id).Scan(&n))
	require.Zero(t, n, "the delivery goes with its request")
}

// verifyWithStandardWebhooks checks a delivery as it arrived with the
// official Standard Webhooks library (see sign_test.go).
func verifyWithStandardWebhooks(t *testing.T, secret string, h http.Header, body []byte, wantOK bool) {
	t.Helper()
	node, dir := nodeVerifier(t)
	headers := map[string]string{}
	for _, k := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
		headers[k] = h.Get(k)
	}
	input, err := json.Marshal(map[string]any{"secret": secret, "headers": headers, "body": string(body)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "verify.mjs")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(input)
	out, err := cmd.CombinedOutput()
	if wantOK {
		require.NoError(t, err, string(out))
		require.Equal(t, "ok\n", string(out))
	} else {
		require.Error(t, err, string(out))
	}
}

package correlation_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

func setup(t *testing.T) (*correlation.Store, *pgxpool.Pool) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testsvc.Database(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return correlation.NewStore(pool, slog.New(slog.DiscardHandler)), pool
}

func newRequest(timeout time.Duration) correlation.NewRequest {
	return correlation.NewRequest{
		ID: uuid.New(), RoutingKey: "workflow.create", Time: time.Now().UnixMilli(),
		ExpiresAt: time.Now().Add(timeout), Body: []byte(`{"a": 1}`), PublishAfter: time.Now(),
	}
}

func TestCreateIsIdempotentAndDetectsConflicts(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	ctx := context.Background()
	n := newRequest(time.Minute)
	r, created, err := s.Create(ctx, n)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, correlation.StatusQueued, r.Status)
	require.Equal(t, n.Body, r.Body, "the body is kept byte for byte")

	again, created, err := s.Create(ctx, n)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, r.ID, again.ID)

	other := n
	other.Body = []byte(`{"a": 2}`)
	_, _, err = s.Create(ctx, other)
	require.ErrorIs(t, err, correlation.ErrConflict)
	other = n
	other.RoutingKey = "workflow.delete"
	_, _, err = s.Create(ctx, other)
	require.ErrorIs(t, err, correlation.ErrConflict)

	_, err = s.Get(ctx, uuid.New())
	require.ErrorIs(t, err, correlation.ErrNotFound)
}

// Many replies racing for one request: exactly one is stored, the rest are
// duplicates, none is a dead letter.
func TestConcurrentRepliesFirstWins(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	r, _, err := s.Create(ctx, newRequest(time.Minute))
	require.NoError(t, err)
	require.NoError(t, s.MarkPublished(ctx, r.ID))

	const n = 16
	outcomes := make(chan correlation.Outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := s.StoreReply(ctx, correlation.IncomingReply{
				CorrelationID: r.ID.String(), MessageID: uuid.NewString(), Time: int64(i + 1),
				Body: []byte(`{}`), Source: "amqp",
			})
			require.NoError(t, err)
			outcomes <- o
		}()
	}
	wg.Wait()
	close(outcomes)
	counts := map[correlation.Outcome]int{}
	for o := range outcomes {
		counts[o]++
	}
	require.Equal(t, map[correlation.Outcome]int{correlation.OutcomeStored: 1, correlation.OutcomeDuplicate: n - 1}, counts)
	var dead int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&dead))
	require.Zero(t, dead)
}

func TestReplyOutcomes(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	ctx := context.Background()
	reply := func(id string) correlation.Outcome {
		o, err := s.StoreReply(ctx, correlation.IncomingReply{CorrelationID: id, Body: []byte(`{}`), Source: "http"})
		require.NoError(t, err)
		return o
	}

	require.Equal(t, correlation.OutcomeUnknown, reply(uuid.NewString()))
	require.Equal(t, correlation.OutcomeUnknown, reply("not-a-uuid"))

	unroutable, _, err := s.Create(ctx, newRequest(time.Minute))
	require.NoError(t, err)
	require.NoError(t, s.MarkUnroutable(ctx, unroutable.ID))
	require.Equal(t, correlation.OutcomeClosed, reply(unroutable.ID.String()))

	late, _, err := s.Create(ctx, newRequest(50*time.Millisecond))
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, correlation.OutcomeLate, reply(late.ID.String()))
	got, err := s.Get(ctx, late.ID)
	require.NoError(t, err)
	require.Equal(t, correlation.StatusExpired, got.Status, "a late reply closes the overdue request")

	dead, err := s.DeadLetters(ctx, late.ID.String())
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "late", dead[0].Reason)
	require.Equal(t, "http", dead[0].Source)
}

func TestWaitWokenByNotificationFromAnotherStore(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	open := func() *correlation.Store {
		pool, err := pgxpool.New(context.Background(), dbURL)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		return correlation.NewStore(pool, slog.New(slog.DiscardHandler))
	}
	a, b := open(), open()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan struct{})
	var once sync.Once
	go func() { _ = b.Listen(ctx, func() { once.Do(func() { close(listening) }) }) }()
	<-listening

	r, _, err := a.Create(ctx, newRequest(time.Minute))
	require.NoError(t, err)
	got := make(chan correlation.Request, 1)
	go func() {
		w, err := b.Wait(ctx, r.ID, 20*time.Second)
		require.NoError(t, err)
		got <- w
	}()
	require.Eventually(t, func() bool { return b.Waiters() == 1 }, 5*time.Second, 5*time.Millisecond)
	start := time.Now()
	o, err := a.StoreReply(ctx, correlation.IncomingReply{CorrelationID: r.ID.String(), Body: []byte(`{"x":1}`), Source: "amqp"})
	require.NoError(t, err)
	require.Equal(t, correlation.OutcomeStored, o)
	select {
	case w := <-got:
		require.Equal(t, correlation.StatusReplied, w.Status)
		require.Less(t, time.Since(start), 3*time.Second)
	case <-time.After(10 * time.Second):
		t.Fatal("waiter on b never woke")
	}
	require.Eventually(t, func() bool { return b.Waiters() == 0 }, time.Second, 5*time.Millisecond)
}

func TestExpireDueAndOutboxClaim(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	ctx := context.Background()
	overdue, _, err := s.Create(ctx, newRequest(10*time.Millisecond))
	require.NoError(t, err)
	due, _, err := s.Create(ctx, newRequest(time.Minute))
	require.NoError(t, err)
	later := newRequest(time.Minute)
	later.PublishAfter = time.Now().Add(time.Hour)
	_, _, err = s.Create(ctx, later)
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond)

	n, err := s.ExpireDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	got, _ := s.Get(ctx, overdue.ID)
	require.Equal(t, correlation.StatusExpired, got.Status)

	var claimed []uuid.UUID
	n, err = s.ClaimOutbox(ctx, 10, func(int) time.Duration { return time.Second },
		func(_ context.Context, batch []correlation.Request) []correlation.PublishResult {
			var out []correlation.PublishResult
			for _, r := range batch {
				claimed = append(claimed, r.ID)
				out = append(out, correlation.PublishResult{ID: r.ID, Confirmed: true})
			}
			return out
		})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, []uuid.UUID{due.ID}, claimed, "only due, unexpired, queued requests are claimed")
	got, _ = s.Get(ctx, due.ID)
	require.Equal(t, correlation.StatusPending, got.Status)
	require.NotNil(t, got.PublishedAt)

	st, err := s.Outbox(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, st.Depth, "the not-yet-due request waits")
}

// AMQP lets a responder send ids and headers that Postgres text and jsonb
// refuse (NUL, invalid UTF-8). They are stored with U+FFFD in their place,
// not refused, so such a reply cannot loop between queues.
func TestRepliesWithTextPostgresRefuses(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	ctx := context.Background()

	rec, _, err := s.Create(ctx, newRequest(time.Minute))
	require.NoError(t, err)
	o, err := s.StoreReply(ctx, correlation.IncomingReply{
		CorrelationID: rec.ID.String(), MessageID: "msg-\xff\x00", Body: []byte(`{}`), Source: "amqp",
	})
	require.NoError(t, err)
	require.Equal(t, correlation.OutcomeStored, o)
	got, err := s.Get(ctx, rec.ID)
	require.NoError(t, err)
	require.Equal(t, "msg-\uFFFD\uFFFD", got.Reply.MessageID)

	corr := "corr-\xfe\x00"
	o, err = s.StoreReply(ctx, correlation.IncomingReply{
		CorrelationID: corr, Body: []byte("\x00\xff"), Source: "amqp",
		Headers: map[string]any{"note\x00": "a\x00b\xff", "redelivered": true},
	})
	require.NoError(t, err)
	require.Equal(t, correlation.OutcomeUnknown, o)
	dead, err := s.DeadLetters(ctx, "corr-\uFFFD\uFFFD")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, []byte("\x00\xff"), dead[0].Body, "bodies are bytes, kept as sent")
	require.Equal(t, "a\uFFFDb\uFFFD", dead[0].Headers["note\uFFFD"])

	require.NoError(t, s.KeepDeadLetter(ctx, "rejected", correlation.IncomingReply{
		CorrelationID: "\x00", MessageID: "\xc3", Source: "amqp", Headers: map[string]any{"k": "\x00"},
	}))
}

// Concurrent submits and replies share group commits. Repeats of one id in
// the same batch are still one record and one stored reply, and a batch's
// notifications (several ids each) wake waiters on another instance.
func TestGroupCommitsKeepOneRecordAndOneReplyPerID(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	open := func() *correlation.Store {
		pool, err := pgxpool.New(context.Background(), dbURL)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		return correlation.NewStore(pool, slog.New(slog.DiscardHandler))
	}
	a, b := open(), open()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan struct{})
	var once sync.Once
	go func() { _ = b.Listen(ctx, func() { once.Do(func() { close(listening) }) }) }()
	<-listening

	const n, copies = 300, 3
	reqs := make([]correlation.NewRequest, n)
	for i := range reqs {
		reqs[i] = newRequest(time.Minute)
	}
	var created atomic.Int64
	var wg sync.WaitGroup
	for i := range n * copies {
		wg.Go(func() {
			r, isNew, err := a.Create(ctx, reqs[i%n])
			require.NoError(t, err)
			require.Equal(t, reqs[i%n].ID, r.ID)
			if isNew {
				created.Add(1)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(n), created.Load(), "each id is created exactly once")
	for _, r := range reqs {
		wg.Go(func() { require.NoError(t, a.MarkPublished(ctx, r.ID)) })
	}
	wg.Wait()

	results := make(chan correlation.Request, n)
	for _, r := range reqs {
		wg.Go(func() {
			w, err := b.Wait(ctx, r.ID, 20*time.Second)
			require.NoError(t, err)
			results <- w
		})
	}
	require.Eventually(t, func() bool { return b.Waiters() == n }, 5*time.Second, 5*time.Millisecond)
	var stored, dup atomic.Int64
	var replies sync.WaitGroup
	for i := range n * copies {
		replies.Go(func() {
			o, err := a.StoreReply(ctx, correlation.IncomingReply{
				CorrelationID: reqs[i%n].ID.String(), MessageID: uuid.NewString(), Body: []byte(`{"ok":true}`), Source: "amqp",
			})
			require.NoError(t, err)
			switch o {
			case correlation.OutcomeStored:
				stored.Add(1)
			case correlation.OutcomeDuplicate:
				dup.Add(1)
			default:
				t.Errorf("outcome %s", o)
			}
		})
	}
	replies.Wait()
	require.Equal(t, int64(n), stored.Load())
	require.Equal(t, int64(n*(copies-1)), dup.Load())
	wg.Wait()
	close(results)
	for w := range results {
		require.Equal(t, correlation.StatusReplied, w.Status)
		require.JSONEq(t, `{"ok":true}`, string(w.Reply.Body))
	}
}

// A long-poll on a request this instance created starts without reading it;
// a reply stored by another instance before or during the wait still ends it
// at once.
func TestWaitOnOwnRequestSeesRemoteReply(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	open := func() *correlation.Store {
		pool, err := pgxpool.New(context.Background(), dbURL)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		return correlation.NewStore(pool, slog.New(slog.DiscardHandler))
	}
	a, b := open(), open()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan struct{})
	var once sync.Once
	go func() { _ = b.Listen(ctx, func() { once.Do(func() { close(listening) }) }) }()
	<-listening

	for _, replyFirst := range []bool{true, false} {
		r, _, err := b.Create(ctx, newRequest(time.Minute))
		require.NoError(t, err)
		replied := make(chan struct{})
		reply := func() {
			defer close(replied)
			o, err := a.StoreReply(context.Background(), correlation.IncomingReply{CorrelationID: r.ID.String(), Body: []byte(`{}`), Source: "amqp"})
			assert.NoError(t, err)
			assert.Equal(t, correlation.OutcomeStored, o)
		}
		if replyFirst {
			reply()
		} else {
			time.AfterFunc(200*time.Millisecond, reply)
		}
		defer func() { <-replied }()
		start := time.Now()
		w, err := b.Wait(ctx, r.ID, 20*time.Second)
		require.NoError(t, err)
		require.Equal(t, correlation.StatusReplied, w.Status, "reply first: %v", replyFirst)
		require.Less(t, time.Since(start), 5*time.Second, "reply first: %v", replyFirst)
	}
}

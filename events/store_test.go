package events_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/events"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

func newStores(t *testing.T, limit int) (*pgxpool.Pool, *correlation.Store, *events.Store) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testsvc.Database(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool, correlation.NewStore(pool, slog.New(slog.DiscardHandler)), events.NewStore(pool, limit, slog.New(slog.DiscardHandler))
}

func request(t *testing.T, s *correlation.Store) uuid.UUID {
	t.Helper()
	id := uuid.New()
	_, _, err := s.Create(context.Background(), correlation.NewRequest{ID: id, RoutingKey: "a.b", Time: 1,
		ExpiresAt: time.Now().Add(time.Hour), Body: []byte(`{}`), PublishAfter: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	return id
}

func event(t *testing.T, id uuid.UUID, eventID string) events.Incoming {
	t.Helper()
	in, ok, err := events.New(id, events.CloudEvent{SpecVersion: "1.0", ID: eventID, Source: "test", Type: "progress",
		DataContentType: "application/json", Data: []byte(`{"n":1}`)})
	require.NoError(t, err)
	require.True(t, ok)
	return in
}

// Events are kept once, in order, for known requests only, up to the limit;
// a watcher hears about new ones through the listener.
func TestAppendKeepsEachEventOnceInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, reqs, hist := newStores(t, 3)
	lctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go hist.Listen(lctx)

	id := request(t, reqs)
	changed, stop := hist.Watch(id)
	defer stop()
	for _, want := range []struct {
		in  events.Incoming
		out events.Outcome
	}{
		{event(t, id, "e1"), events.OutcomeStored},
		{event(t, id, "e2"), events.OutcomeStored},
		{event(t, id, "e1"), events.OutcomeDuplicate},
		{event(t, uuid.New(), "e1"), events.OutcomeUnknown},
		{event(t, id, "e3"), events.OutcomeStored},
		{event(t, id, "e4"), events.OutcomeOverLimit},
	} {
		got, err := hist.Append(ctx, want.in)
		require.NoError(t, err)
		require.Equal(t, want.out, got, want.in.ID)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher was not woken")
	}

	all, err := hist.After(ctx, id, 0, 10)
	require.NoError(t, err)
	require.Len(t, all, 3)
	require.Less(t, all[0].Seq, all[1].Seq)
	require.Less(t, all[1].Seq, all[2].Seq)
	rest, err := hist.After(ctx, id, all[0].Seq, 10)
	require.NoError(t, err)
	require.Equal(t, all[1:], rest, "resuming after an event gives exactly what followed it")
}

// Concurrent appends share group commits and all land.
func TestConcurrentAppends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, reqs, hist := newStores(t, 1000)
	id := request(t, reqs)
	errs := make(chan error, 200)
	for range 200 {
		in := event(t, id, uuid.NewString())
		go func() {
			_, err := hist.Append(ctx, in)
			errs <- err
		}()
	}
	for range 200 {
		require.NoError(t, <-errs)
	}
	all, err := hist.After(ctx, id, 0, 1000)
	require.NoError(t, err)
	require.Len(t, all, 200)
}

// Events of one request take their seq numbers in commit order: a batch
// waits for another writer of the same request to commit before it numbers
// its own. Otherwise a stream that has read up to seq N could later see a
// smaller seq commit, and skip it (Last-Event-ID resumption is by seq).
func TestSeqOrderIsCommitOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, reqs, hist := newStores(t, 100)
	id := request(t, reqs)

	// Another writer holds the request, as a concurrent batch would.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT 1 FROM requests WHERE id = $1 FOR NO KEY UPDATE`, id)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := hist.Append(ctx, event(t, id, "second"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the append did not wait for the other writer (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	first := event(t, id, "first")
	_, err = tx.Exec(ctx, `INSERT INTO request_events (request_id, source, event_id, type, event) VALUES ($1, $2, $3, $4, $5)`,
		id, first.Source, first.ID, first.Type, first.Event)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, <-done)

	all, err := hist.After(ctx, id, 0, 10)
	require.NoError(t, err)
	require.Len(t, all, 2)
	require.Less(t, all[0].Seq, all[1].Seq)
	require.Contains(t, string(all[0].Event), `"id":"first"`, "the first to commit has the smaller seq")
}

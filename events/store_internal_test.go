package events

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// A full batch of events for as many requests is stored, and announced to
// every request's watchers, though its ids do not fit in one NOTIFY payload
// (8000 bytes). The fault suite found this: after a broker was killed, the
// redelivered lifecycle events came back in batches of 256 distinct requests,
// and the whole batch failed.
func TestFlushAnnouncesALargeBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testsvc.Database(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	reqs := correlation.NewStore(pool, slog.New(slog.DiscardHandler))
	hist := NewStore(pool, 10, slog.New(slog.DiscardHandler))

	const n = 256
	in := make([]Incoming, n)
	for i := range in {
		id := uuid.New()
		_, _, err := reqs.Create(ctx, correlation.NewRequest{ID: id, RoutingKey: "a.b", Time: 1,
			ExpiresAt: time.Now().Add(time.Hour), Body: []byte(`{}`), PublishAfter: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		e, ok, err := New(id, CloudEvent{SpecVersion: "1.0", ID: "e1", Source: "test", Type: "progress",
			DataContentType: "application/json", Data: []byte(`{}`)})
		require.NoError(t, err)
		require.True(t, ok)
		in[i] = e
	}

	last, stop := hist.Watch(in[n-1].RequestID)
	defer stop()
	lctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go hist.Listen(lctx)
	select {
	case <-last: // the listener is listening
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not start")
	}

	out, err := hist.flush(ctx, in)
	require.NoError(t, err)
	for i, o := range out {
		require.Equal(t, OutcomeStored, o, i)
	}
	select {
	case <-last:
	case <-time.After(10 * time.Second):
		t.Fatal("the last request's watcher was not woken")
	}
}

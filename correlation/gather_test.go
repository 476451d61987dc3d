package correlation_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
)

// Many responders reply to one gather at once, each twice: exactly N are
// kept, one per responder, the Nth ends the request, and every other reply
// is a duplicate or (a responder past the Nth) a dead letter.
func TestGatherConcurrentRepliesCountOncePerResponder(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	n := newRequest(time.Minute)
	n.ExpectReplies = 5
	_, _, err := s.Create(ctx, n)
	require.NoError(t, err)
	require.NoError(t, s.MarkPublished(ctx, n.ID))

	var mu sync.Mutex
	outcomes := map[correlation.Outcome]int{}
	var wg sync.WaitGroup
	for i := range 8 {
		for copy := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o, err := s.StoreReply(ctx, correlation.IncomingReply{
					CorrelationID: n.ID.String(), MessageID: fmt.Sprintf("m-%d-%d", i, copy), From: fmt.Sprintf("svc-%d", i),
					Time: 1, Body: []byte(`{}`), Source: "amqp",
				})
				require.NoError(t, err)
				mu.Lock()
				outcomes[o]++
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	r, err := s.Get(ctx, n.ID)
	require.NoError(t, err)
	require.Equal(t, correlation.StatusReplied, r.Status)
	require.Len(t, r.Replies, 5)
	require.Equal(t, 5, outcomes[correlation.OutcomeStored], "outcomes: %v", outcomes)
	// 16 replies: 5 stored; each stored responder's second copy is a
	// duplicate; the 3 late responders' copies are closed, or a duplicate of
	// their own first closed copy — never stored.
	require.Equal(t, 16, outcomes[correlation.OutcomeStored]+outcomes[correlation.OutcomeDuplicate]+outcomes[correlation.OutcomeClosed])
	seen := map[string]bool{}
	for i, rp := range r.Replies {
		require.False(t, seen[rp.From], "responder %s twice", rp.From)
		seen[rp.From] = true
		if i == 0 {
			require.Equal(t, rp.From, r.Reply.From, "the first reply is the reply")
		}
	}
	var kept int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM request_replies WHERE request_id = $1`, n.ID).Scan(&kept))
	require.Equal(t, 5, kept)
}

// The sweeper ends a gather with replies partial, one with none expired,
// and retention removes the gathered replies with their request.
func TestGatherPartialExpiryAndPurge(t *testing.T) {
	t.Parallel()
	s, pool := setup(t)
	ctx := context.Background()
	some := newRequest(300 * time.Millisecond)
	some.ExpectReplies = 3
	none := newRequest(300 * time.Millisecond)
	none.ExpectReplies = 3
	all := newRequest(300 * time.Millisecond)
	all.ExpectReplies = correlation.ExpectAll
	for _, n := range []correlation.NewRequest{some, none, all} {
		_, _, err := s.Create(ctx, n)
		require.NoError(t, err)
	}
	for _, id := range []string{some.ID.String(), all.ID.String()} {
		o, err := s.StoreReply(ctx, correlation.IncomingReply{CorrelationID: id, MessageID: "m", From: "only",
			Time: 1, Body: []byte(`{"ok": true}`), Source: "http"})
		require.NoError(t, err)
		require.Equal(t, correlation.OutcomeStored, o)
	}
	time.Sleep(400 * time.Millisecond)
	closed, err := s.ExpireDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, closed)
	for id, want := range map[string]correlation.Status{
		some.ID.String(): correlation.StatusPartial, none.ID.String(): correlation.StatusExpired, all.ID.String(): correlation.StatusReplied,
	} {
		var st correlation.Status
		require.NoError(t, pool.QueryRow(ctx, `SELECT status FROM requests WHERE id = $1`, id).Scan(&st))
		require.Equal(t, want, st, id)
	}
	r, err := s.Get(ctx, some.ID)
	require.NoError(t, err)
	require.Len(t, r.Replies, 1)
	rec := r.Record()
	require.Equal(t, 3, *rec.RepliesExpected)
	require.Len(t, rec.Replies, 1)

	_, err = pool.Exec(ctx, `UPDATE requests SET updated_at = now() - interval '2 hours'`)
	require.NoError(t, err)
	purged, err := s.Purge(ctx, time.Hour, 100)
	require.NoError(t, err)
	require.Equal(t, 3, purged)
	var left int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM request_replies`).Scan(&left))
	require.Zero(t, left)
}

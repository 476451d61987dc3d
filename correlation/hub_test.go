package correlation

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// The open set only ever errs towards reading the record: any wake-up of an
// id, or of everyone, forgets it.
func TestHubForgetsOpenIDsOnEveryWakeUp(t *testing.T) {
	t.Parallel()
	h := newHub()
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{a, b, c} {
		h.opened(id)
	}
	require.True(t, h.isOpen(a))
	h.wake(a)
	require.False(t, h.isOpen(a), "a terminal transition forgets the id")
	h.deliver(b, &Request{ID: b, Status: StatusReplied})
	require.False(t, h.isOpen(b))
	require.True(t, h.isOpen(c))
	h.wakeAll()
	require.False(t, h.isOpen(c), "missed notifications forget every id")
}

// Terminal records delivered to the hub are kept for a short while, within
// bounds on count and age; open ones are not kept at all.
func TestHubKeepsRecentTerminalRecords(t *testing.T) {
	t.Parallel()
	h := newHub()
	now := time.Now()
	open := &Request{ID: uuid.New(), Status: StatusPending}
	h.deliver(open.ID, open)
	require.Nil(t, h.recentRecord(open.ID, now), "an open record may still change")

	done := &Request{ID: uuid.New(), Status: StatusReplied, Reply: &Reply{Body: []byte(`{}`)}}
	h.deliver(done.ID, done)
	require.Same(t, done, h.recentRecord(done.ID, now))
	require.Nil(t, h.recentRecord(done.ID, time.Now().Add(recentFor)), "kept for recentFor only")

	h.mu.Lock()
	for range maxRecent {
		r := &Request{ID: uuid.New(), Status: StatusExpired}
		h.remember(r, now)
	}
	h.mu.Unlock()
	require.Nil(t, h.recentRecord(done.ID, now), "the oldest goes first past maxRecent")
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Len(t, h.recent, maxRecent)
	require.Len(t, h.recentOrder, maxRecent)
}

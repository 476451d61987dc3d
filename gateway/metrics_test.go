package gateway

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
)

func TestReplyLatencyCountsFromPublishElseCreation(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	published := created.Add(40 * time.Millisecond)
	replied := func(at time.Time) *correlation.Reply { return &correlation.Reply{ReceivedAt: at} }
	for _, tc := range []struct {
		name string
		rec  *correlation.Request
		want time.Duration
	}{
		{"from the publish", &correlation.Request{CreatedAt: created, PublishedAt: &published,
			Reply: replied(published.Add(250 * time.Millisecond))}, 250 * time.Millisecond},
		{"from the creation when the reply beat the confirm", &correlation.Request{CreatedAt: created,
			Reply: replied(created.Add(30 * time.Millisecond))}, 30 * time.Millisecond},
		{"never negative", &correlation.Request{CreatedAt: created, PublishedAt: &published,
			Reply: replied(created)}, 0},
		{"no reply", &correlation.Request{CreatedAt: created}, 0},
		{"no record", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, replyLatency(tc.rec))
		})
	}
}

package webhook

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseSchedule(t *testing.T) {
	t.Parallel()
	s, err := ParseSchedule(" 0s, 5s,5m ,")
	require.NoError(t, err)
	require.Equal(t, []time.Duration{0, 5 * time.Second, 5 * time.Minute}, s)
	for _, bad := range []string{"", ",", "5", "-1s", "0s,soon"} {
		_, err := ParseSchedule(bad)
		require.Error(t, err, bad)
	}
	var total time.Duration
	for _, d := range DefaultSchedule {
		total += d
	}
	require.InDelta(t, 72*time.Hour, total, float64(time.Hour), "about three days")
}

func TestNextDelay(t *testing.T) {
	t.Parallel()
	schedule := []time.Duration{0, 10 * time.Second, time.Minute}
	d, ok := nextDelay(schedule, 1, 0, 0)
	require.True(t, ok)
	require.Equal(t, 10*time.Second, d)
	d, ok = nextDelay(schedule, 2, 0, 0)
	require.True(t, ok)
	require.Equal(t, time.Minute, d)
	_, ok = nextDelay(schedule, 3, 0, 0)
	require.False(t, ok, "three attempts made: the schedule has run out")

	for range 200 {
		d, _ := nextDelay(schedule, 1, 0.2, 0)
		require.GreaterOrEqual(t, d, 8*time.Second)
		require.Less(t, d, 12*time.Second)
	}
	d, _ = nextDelay(schedule, 1, 0.2, time.Hour)
	require.Equal(t, time.Hour, d, "a longer Retry-After wins")
	d, _ = nextDelay(schedule, 1, 0, 100*time.Hour)
	require.Equal(t, maxRetryAfter, d, "but only up to a day")
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":               0,
		"120":            2 * time.Minute,
		" 5 ":            5 * time.Second,
		"0":              0,
		"-3":             0,
		"soon":           0,
		"99999999999999": maxRetryAfter,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	} {
		require.Equal(t, want, parseRetryAfter(in, now), "%q", in)
	}
}

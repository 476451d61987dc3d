package webhook

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultSchedule is the delay before each attempt, the first one at once:
// the Standard Webhooks schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h,
// 10 h), stretched with 14 h and two 20 h steps so a receiver has about
// three days (71.6 h after the first attempt) to come back.
var DefaultSchedule = []time.Duration{
	0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour,
	5 * time.Hour, 10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 20 * time.Hour,
}

// ParseSchedule reads a comma-separated list of Go durations ("0s,5s,5m").
func ParseSchedule(s string) ([]time.Duration, error) {
	var out []time.Duration
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		d, err := time.ParseDuration(part)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("webhook schedule: %q is not a duration of 0 or more", part)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("webhook schedule: no attempts")
	}
	return out, nil
}

// maxRetryAfter bounds how far a receiver's Retry-After can push the next
// attempt.
const maxRetryAfter = 24 * time.Hour

// nextDelay returns the delay before attempt n+1 of a round (n attempts
// made so far, n ≥ 1), and false when the schedule has run out. The
// scheduled delay is spread by ±jitter so that receivers that failed
// together are not all retried in the same instant; a longer Retry-After
// from the receiver wins.
func nextDelay(schedule []time.Duration, n int, jitter float64, retryAfter time.Duration) (time.Duration, bool) {
	if n >= len(schedule) {
		return 0, false
	}
	d := schedule[n]
	if jitter > 0 && d > 0 {
		d = time.Duration(float64(d) * (1 - jitter + 2*jitter*rand.Float64()))
	}
	return max(d, min(retryAfter, maxRetryAfter)), true
}

// parseRetryAfter reads a Retry-After header (RFC 9110: delay-seconds or an
// HTTP date); zero when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return min(time.Duration(min(n, int64(maxRetryAfter/time.Second)))*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

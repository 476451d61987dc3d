package api_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/gateway"
	"github.com/switchboard-gw/switchboard/responder"
)

// A request to a queue nobody reads is flagged stalled after the stall
// time, with a request.stalled event; once a responder starts and picks it
// up, picked_up_at is set and stalled clears, and the reply ends it.
func TestStalledUntilAResponderPicksItUp(t *testing.T) {
	t.Parallel()
	b := setup(t, options{gwCfg: func(c *gateway.Config) { c.StallAfter = time.Second }})
	b.bindQueue(t, "nobody", "calibration.#") // bound, so not unroutable; not consumed

	res := b.do(t, "POST", "/calibration/run", jsonCT, `{"band": "L"}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	id := res.json(t)["id"].(string)
	rec := res.json(t)
	require.Equal(t, false, rec["stalled"])
	require.Nil(t, rec["picked_up_at"])

	var stalledAt time.Time
	require.Eventually(t, func() bool {
		rec = b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)
		return rec["stalled"] == true
	}, 10*time.Second, 50*time.Millisecond, "never flagged stalled")
	stalledAt = time.Now()
	require.Equal(t, "pending", rec["status"])
	require.Nil(t, rec["picked_up_at"])
	require.Eventually(t, func() bool { return b.hasEvent(t, id, "request.stalled") }, 10*time.Second, 50*time.Millisecond,
		"no request.stalled event in the history")
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM requests WHERE stalled_at IS NOT NULL`), "flagged once")

	// A responder starts on the queue: it picks the request up, and answers
	// once the test has seen the pick-up.
	pickedUp := make(chan struct{})
	b.responder(t, "nobody", func(ctx context.Context, req responder.Request) (any, error) {
		select {
		case <-pickedUp:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return map[string]string{"ok": "yes"}, nil
	}, "calibration.#")
	require.Eventually(t, func() bool {
		rec = b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)
		return rec["picked_up_at"] != nil
	}, 10*time.Second, 50*time.Millisecond, "picked_up_at never set")
	require.Equal(t, false, rec["stalled"], "picked up: no longer stalled")
	require.Equal(t, "pending", rec["status"])
	at := time.UnixMilli(int64(rec["picked_up_at"].(float64)))
	require.WithinDuration(t, stalledAt, at, 15*time.Second)
	require.True(t, b.hasEvent(t, id, "request.received"))

	close(pickedUp)
	rec = b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "").json(t)
	require.Equal(t, "replied", rec["status"])
	require.Equal(t, false, rec["stalled"])
	require.NotNil(t, rec["picked_up_at"])
}

// A request a responder picks up at once is never flagged, and a gateway
// with the stall time off flags nothing.
func TestPickedUpInTimeIsNeverStalled(t *testing.T) {
	t.Parallel()
	b := setup(t, options{gwCfg: func(c *gateway.Config) { c.StallAfter = time.Second }})
	b.echo(t, "echo", "workflow.#")
	rec := b.do(t, "POST", "/workflow/create", map[string]string{"Content-Type": "application/json", "Prefer": "wait=10"}, `{}`).json(t)
	require.Equal(t, "replied", rec["status"])
	id := rec["id"].(string)
	require.Eventually(t, func() bool {
		return b.do(t, "GET", "/v1/requests/"+id, nil, "").json(t)["picked_up_at"] != nil
	}, 10*time.Second, 50*time.Millisecond)

	off := setup(t, options{gwCfg: func(c *gateway.Config) { c.StallAfter = 0 }})
	off.bindQueue(t, "nobody", "calibration.#")
	stuck := off.do(t, "POST", "/calibration/run", jsonCT, `{}`).json(t)["id"].(string)
	time.Sleep(2 * time.Second) // well past a second, ten sweeps
	rec = off.do(t, "GET", "/v1/requests/"+stuck, nil, "").json(t)
	require.Equal(t, false, rec["stalled"])
	require.Zero(t, off.count(t, `SELECT count(*) FROM requests WHERE stalled_at IS NOT NULL`))
}

// hasEvent reports whether the request's history holds an event of type typ.
func (b *bundle) hasEvent(t *testing.T, id, typ string) bool {
	t.Helper()
	res := b.do(t, "GET", "/v1/requests/"+id+"/events", map[string]string{"Accept": "application/json"}, "")
	require.Equal(t, 200, res.status, "body: %s", res.body)
	var hist struct {
		Events []struct {
			Type string `json:"type"`
		} `json:"events"`
	}
	require.NoError(t, json.Unmarshal(res.body, &hist))
	for _, e := range hist.Events {
		if e.Type == typ {
			return true
		}
	}
	return false
}

// A request answered at once, with no request.received, is picked up no
// later than its reply was sent.
func TestPickedUpNoLaterThanTheReply(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.echo(t, "echo", "workflow.#")
	rec := b.do(t, "POST", "/workflow/create", map[string]string{"Content-Type": "application/json", "Prefer": "wait=10"}, `{}`).json(t)
	require.Equal(t, "replied", rec["status"])
	picked := int64(rec["picked_up_at"].(float64))
	replied := int64(rec["reply"].(map[string]any)["time"].(float64))
	require.LessOrEqual(t, picked, replied)
	require.GreaterOrEqual(t, picked, int64(rec["time"].(float64))-1000, "not before the request existed (clocks aside)")
}

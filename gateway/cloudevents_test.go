package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// TestCloudEventsAreValid has the official CloudEvents SDK for JavaScript
// read the gateway's lifecycle events, built by the gateway's own builder:
// a second implementation, so a mistake shared by builder and Go tests
// cannot pass unnoticed.
func TestCloudEventsAreValid(t *testing.T) {
	t.Parallel()
	node, dir := cloudEventsChecker(t)
	now := time.Date(2026, 3, 1, 12, 30, 45, 123456789, time.FixedZone("CET", 3600))
	r := correlation.Request{ID: uuid.MustParse("0194f3c2-7b8a-7cde-8f01-23456789abcd"), RoutingKey: "workflow.create",
		Status: correlation.StatusCancelled}
	replied := r
	replied.Status = correlation.StatusReplied

	built := []correlation.Event{
		requestEvent("request.cancelled", "request.cancelled.workflow.create", r, "", now),
		requestEvent("reply.delivered", "reply.delivered.workflow.create", replied, "webhook", now),
		requestEvent("reply.delivered", "reply.delivered.workflow.create", replied, "read", now),
	}
	var bodies []json.RawMessage
	for _, e := range built {
		var ev map[string]any
		require.NoError(t, json.Unmarshal(e.Body, &ev))
		require.Equal(t, r.ID.String(), ev["correlationid"])
		require.Equal(t, r.ID.String(), ev["subject"])
		require.Equal(t, "2026-03-01T11:30:45.123456789Z", ev["time"], "time is UTC")
		bodies = append(bodies, e.Body)
	}
	out, err := runCloudEventsCheck(t, node, dir, bodies)
	require.NoError(t, err, out)
	require.Equal(t, strings.Repeat("ok\n", len(bodies)), out)

	// The checker can fail: an event without an id, and one whose extension
	// name the specification forbids, are refused.
	for _, broken := range []func(map[string]any){
		func(ev map[string]any) { delete(ev, "id") },
		func(ev map[string]any) { ev["correlation_id"] = ev["correlationid"] },
	} {
		var ev map[string]any
		require.NoError(t, json.Unmarshal(built[0].Body, &ev))
		broken(ev)
		b, err := json.Marshal(ev)
		require.NoError(t, err)
		out, err := runCloudEventsCheck(t, node, dir, []json.RawMessage{b})
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, out)
		require.Equal(t, 1, exit.ExitCode(), out)
		require.Contains(t, out, "event 0: ")
	}
}

// runCloudEventsCheck runs check.mjs on events and returns its output.
func runCloudEventsCheck(t *testing.T, node, dir string, events []json.RawMessage) (string, error) {
	t.Helper()
	input, err := json.Marshal(events)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "check.mjs")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(input)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cloudEventsChecker returns node's path and the directory of check.mjs,
// or skips the test (fails it when CI=true, where a skipped
// interoperability check would pass unnoticed) when they are missing.
func cloudEventsChecker(t *testing.T) (node, dir string) {
	t.Helper()
	dir = filepath.Join("testdata", "cloudevents")
	missing := func(why string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why + " (with CI=true this test fails instead)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not on PATH: install Node.js 18 or later, then run `make testdeps`")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "cloudevents", "package.json")); err != nil {
		missing("the cloudevents npm package is not installed: run `make testdeps` (npm ci in gateway/testdata/cloudevents)")
	}
	return node, dir
}

// The lifecycle events the database triggers write (migrations/0004) are
// valid CloudEvents too: every kind, read back from the event outbox.
func TestLifecycleEventsFromTheDatabaseAreValid(t *testing.T) {
	t.Parallel()
	node, dir := cloudEventsChecker(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testsvc.Database(t))
	require.NoError(t, err)
	defer pool.Close()
	store := correlation.NewStore(pool, slog.New(slog.DiscardHandler))
	create := func(timeout time.Duration) uuid.UUID {
		id := uuid.New()
		_, _, err := store.Create(ctx, correlation.NewRequest{ID: id, RoutingKey: "workflow.create", Time: 1,
			ExpiresAt: time.Now().Add(timeout), Body: []byte(`{}`), PublishAfter: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		return id
	}
	replied, failed, cancelled, unroutable := create(time.Hour), create(time.Hour), create(time.Hour), create(time.Hour)
	create(time.Millisecond) // expires
	_, err = store.StoreReply(ctx, correlation.IncomingReply{CorrelationID: replied.String(), Body: []byte(`{}`), Source: "http"})
	require.NoError(t, err)
	_, err = store.StoreReply(ctx, correlation.IncomingReply{CorrelationID: failed.String(), Body: []byte(`{}`), Failed: true, Source: "http"})
	require.NoError(t, err)
	_, err = store.Cancel(ctx, cancelled)
	require.NoError(t, err)
	require.NoError(t, store.MarkUnroutable(ctx, unroutable))
	time.Sleep(5 * time.Millisecond)
	_, err = store.ExpireDue(ctx)
	require.NoError(t, err)

	rows, err := pool.Query(ctx, `SELECT routing_key, body FROM event_outbox ORDER BY id`)
	require.NoError(t, err)
	var bodies []json.RawMessage
	kinds := map[string]int{}
	var key string
	var body []byte
	_, err = pgx.ForEachRow(rows, []any{&key, &body}, func() error {
		var ev map[string]any
		if err := json.Unmarshal(body, &ev); err != nil {
			return err
		}
		kinds[ev["type"].(string)]++
		require.Equal(t, ev["type"].(string)+".workflow.create", key)
		require.Equal(t, ev["correlationid"], ev["subject"])
		bodies = append(bodies, append([]byte(nil), body...))
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, map[string]int{"request.accepted": 5, "request.replied": 1, "request.failed": 1,
		"request.cancelled": 1, "request.unroutable": 1, "request.expired": 1}, kinds)
	out, err := runCloudEventsCheck(t, node, dir, bodies)
	require.NoError(t, err, out)
	require.Equal(t, strings.Repeat("ok\n", len(bodies)), out)
}

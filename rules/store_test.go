package rules_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/rules"
)

// firingStore returns a firing store on a fresh database, and its pool.
func firingStore(t *testing.T) (*rules.PGFirings, *pgxpool.Pool) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testsvc.Database(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return rules.NewPGFirings(pool), pool
}

func TestPGFirings(t *testing.T) {
	t.Parallel()
	s, pool := firingStore(t)
	ctx := context.Background()

	ev := json.RawMessage(`{"id":"e1","source":"s","type":"t","time":"2026-05-01T10:00:00Z","data":{"n":1}}`)
	failed := rules.Firing{Rule: "r1", Source: "s", EventID: "e1", EventType: "t", Event: ev,
		Outcome: rules.OutcomeFailed, Error: "actions[0].http: boom \x00 \xff",
		Actions: []rules.ActionResult{{Kind: "http", OutputID: "id-1", Outcome: rules.ActionFailed, Error: "nul \x00 here", Attempts: 4}}}
	require.NoError(t, s.Record(ctx, failed))
	require.NoError(t, s.Record(ctx, rules.Firing{Rule: "r1", Source: "s", EventID: "e2", EventType: "t", Event: ev, Outcome: rules.OutcomeMatched}))
	require.NoError(t, s.Record(ctx, rules.Firing{Rule: "r2", Source: "s", EventID: "e3", EventType: "t", Event: ev, Outcome: rules.OutcomeConditionError, Error: "when: no such key: x"}))
	require.NoError(t, s.Record(ctx, rules.Firing{Rule: "r2", Source: "s", EventID: "e4", EventType: "t", Outcome: rules.OutcomeHopLimit}))

	got, err := s.Recent(ctx, "r1", 10)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "e2", got[0].EventID, "newest first")
	require.Equal(t, rules.OutcomeMatched, got[0].Outcome)
	require.Empty(t, got[0].Actions)
	f := got[1]
	require.Positive(t, f.ID)
	require.Less(t, f.ID, got[0].ID)
	require.Equal(t, "r1", f.Rule)
	require.Equal(t, "s", f.Source)
	require.Equal(t, "t", f.EventType)
	require.JSONEq(t, string(ev), string(f.Event))
	require.Equal(t, rules.OutcomeFailed, f.Outcome)
	require.Equal(t, "actions[0].http: boom \uFFFD \uFFFD", f.Error, "text Postgres refuses is made storable")
	require.Equal(t, []rules.ActionResult{{Kind: "http", OutputID: "id-1", Outcome: rules.ActionFailed, Error: "nul \uFFFD here", Attempts: 4}}, f.Actions)
	require.WithinDuration(t, time.Now(), f.At, time.Minute)

	got, err = s.Recent(ctx, "r1", 1)
	require.NoError(t, err)
	require.Len(t, got, 1)
	got, err = s.Recent(ctx, "nope", 10)
	require.NoError(t, err)
	require.Empty(t, got)

	// The outcome is checked.
	err = s.Record(ctx, rules.Firing{Rule: "r1", Outcome: "maybe"})
	require.ErrorContains(t, err, "record firing: ")

	// Purge by count: keep the newest one per rule.
	for i := range 5 {
		require.NoError(t, s.Record(ctx, rules.Firing{Rule: "r3", EventID: string(rune('a' + i)), Outcome: rules.OutcomeMatched}))
	}
	n, err := s.Purge(ctx, 0, 1)
	require.NoError(t, err)
	require.Equal(t, int64(1+1+4), n)
	for rule, want := range map[string]string{"r1": "e2", "r2": "e4", "r3": "e"} {
		got, err := s.Recent(ctx, rule, 10)
		require.NoError(t, err)
		require.Len(t, got, 1, rule)
		require.Equal(t, want, got[0].EventID, rule)
	}

	// Purge by age.
	_, err = pool.Exec(ctx, `UPDATE rule_firings SET fired_at = now() - interval '2 days' WHERE rule = 'r1'`)
	require.NoError(t, err)
	n, err = s.Purge(ctx, 24*time.Hour, 0)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	got, err = s.Recent(ctx, "r1", 10)
	require.NoError(t, err)
	require.Empty(t, got)
	n, err = s.Purge(ctx, 0, 0)
	require.NoError(t, err)
	require.Zero(t, n, "no bound, nothing purged")

	// An outage is ErrUnavailable, which the API maps to 503.
	pool.Close()
	_, err = s.Recent(ctx, "r2", 10)
	require.ErrorIs(t, err, correlation.ErrUnavailable)
}

// The engine and the stores together: a failed action leaves a firing and
// a dead letter in Postgres.
func TestEngineRecordsToPostgres(t *testing.T) {
	t.Parallel()
	firings, pool := firingStore(t)
	store := correlation.NewStore(pool, slog.New(slog.DiscardHandler))
	set, _, err := loadOne(t, `
sources:
  s: {hook: {}}
rules:
  - {name: r, description: d, source: s, when: event.data.ok == false, actions: [{publish: {exchange: x, routing_key: '"k"', type: t, retries: 0}}]}
`)
	require.NoError(t, err)
	e := rules.NewEngine(rules.EngineConfig{}, rules.Deps{Publisher: &fakePublisher{failFirst: -1}, Firings: firings, DeadLetters: store}, nil)
	e.Swap(set)
	ev := rules.Event{ID: "e1", Source: "s", Type: "t", Data: json.RawMessage(`{"ok": false}`)}
	require.NoError(t, e.Handle(context.Background(), "s", ev))

	got, err := firings.Recent(context.Background(), "r", 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, rules.OutcomeFailed, got[0].Outcome)
	dls, err := store.ListDeadLetters(context.Background(), nil, 10, 0)
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, rules.ReasonActionFailed, dls[0].Reason)
	require.Equal(t, "rules", dls[0].Source)
	require.Equal(t, "e1", dls[0].MessageID)
	require.Equal(t, rules.OutputID("s", "e1", "r", 0).String(), dls[0].CorrelationID)
}

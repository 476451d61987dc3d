package rules

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-gw/switchboard/correlation"
)

// PGFirings keeps firings in Postgres (table rule_firings, migration 0005).
// Its errors are wrapped with correlation.DBError, so an outage is
// correlation.ErrUnavailable.
type PGFirings struct {
	pool *pgxpool.Pool
}

// NewPGFirings returns a firing store on pool.
func NewPGFirings(pool *pgxpool.Pool) *PGFirings { return &PGFirings{pool: pool} }

// Record implements FiringStore. f.ID and f.At are set by Postgres.
func (s *PGFirings) Record(ctx context.Context, f Firing) error {
	actions := make([]ActionResult, len(f.Actions))
	for i, a := range f.Actions {
		a.Error = cleanText(a.Error)
		actions[i] = a
	}
	aj, err := json.Marshal(actions)
	if err != nil {
		return correlation.DBError("record firing", err)
	}
	var errText *string
	if f.Error != "" {
		e := cleanText(f.Error)
		errText = &e
	}
	event := f.Event
	if event == nil {
		event = []byte{}
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO rule_firings (rule, source, event_id, event_type, event, outcome, error, actions)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		cleanText(f.Rule), cleanText(f.Source), cleanText(f.EventID), cleanText(f.EventType),
		[]byte(event), f.Outcome, errText, aj)
	if err != nil {
		return correlation.DBError("record firing", err)
	}
	return nil
}

// Recent returns up to limit firings of rule, newest first.
func (s *PGFirings) Recent(ctx context.Context, rule string, limit int) ([]Firing, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, rule, source, event_id, event_type, event, outcome, coalesce(error, ''), actions, fired_at
		FROM rule_firings WHERE rule = $1 ORDER BY id DESC LIMIT $2`, rule, limit)
	if err != nil {
		return nil, correlation.DBError("list firings", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Firing, error) {
		var f Firing
		var event, actions []byte
		err := row.Scan(&f.ID, &f.Rule, &f.Source, &f.EventID, &f.EventType, &event, &f.Outcome, &f.Error, &actions, &f.At)
		if err != nil {
			return f, err
		}
		f.Event = event
		if err := json.Unmarshal(actions, &f.Actions); err != nil {
			return f, err
		}
		return f, nil
	})
	if err != nil {
		return nil, correlation.DBError("list firings", err)
	}
	return out, nil
}

// purgeBatch is how many firings one purge statement deletes.
const purgeBatch = 10_000

// Purge bounds the history: it deletes the firings older than olderThan
// and, for each rule, all but its newest keepPerRule firings, and returns
// how many it deleted. A bound that is zero or negative is not applied.
// Dead letters are kept elsewhere and are not touched.
func (s *PGFirings) Purge(ctx context.Context, olderThan time.Duration, keepPerRule int) (int64, error) {
	if olderThan <= 0 && keepPerRule <= 0 {
		return 0, nil
	}
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `
			DELETE FROM rule_firings WHERE id IN (
				SELECT id FROM (
					SELECT id, fired_at, row_number() OVER (PARTITION BY rule ORDER BY id DESC) AS n
					FROM rule_firings) f
				WHERE ($1 > 0 AND f.fired_at < now() - make_interval(secs => $1))
				   OR ($2 > 0 AND f.n > $2)
				LIMIT $3)`, olderThan.Seconds(), keepPerRule, purgeBatch)
		if err != nil {
			return total, correlation.DBError("purge firings", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < purgeBatch {
			return total, nil
		}
	}
}

// cleanText makes s storable as Postgres text and in jsonb, which refuse
// invalid UTF-8 and NUL: event ids from a UDP datagram can hold any bytes.
func cleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

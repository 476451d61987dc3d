package correlation

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// PublishResult is what the outbox relay learned from publishing one request.
type PublishResult struct {
	ID         uuid.UUID
	Confirmed  bool  // the broker confirmed it: the request is pending
	Unroutable bool  // the broker returned it: the request is unroutable
	Err        error // it could not be published; try again later
}

// ClaimOutbox takes up to limit queued requests that are due, locking them
// with FOR UPDATE SKIP LOCKED so other instances take other rows, hands them
// to publish, and records the results in the same transaction. Requests past
// their deadline are not claimed: the sweeper expires them. A crash before
// commit releases the rows, and they are published again: at least once.
// retryIn says how long a failed request waits before its next attempt.
func (s *Store) ClaimOutbox(ctx context.Context, limit int, retryIn func(attempts int) time.Duration,
	publish func(context.Context, []Request) []PublishResult) (int, error) {
	var woken []uuid.UUID
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT `+requestColumns+` FROM requests
			WHERE status = 'queued' AND next_attempt_at <= now() AND expires_at > now()
			ORDER BY next_attempt_at
			LIMIT $1
			FOR UPDATE SKIP LOCKED`, limit)
		if err != nil {
			return err
		}
		batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Request, error) { return scanRequest(row) })
		if err != nil {
			return err
		}
		n = len(batch)
		if n == 0 {
			return nil
		}
		attempts := make(map[uuid.UUID]int, n)
		for _, r := range batch {
			attempts[r.ID] = r.Attempts
		}
		for _, res := range publish(ctx, batch) {
			var err error
			switch {
			case res.Confirmed:
				_, err = tx.Exec(ctx, `
					UPDATE requests SET status = 'pending', published_at = now(), updated_at = now(),
					       publish_attempts = publish_attempts + 1, last_error = NULL
					WHERE id = $1`, res.ID)
			case res.Unroutable:
				_, err = tx.Exec(ctx, `
					UPDATE requests SET status = 'unroutable', updated_at = now(), publish_attempts = publish_attempts + 1,
					       last_error = 'returned by the broker: no queue bound for the routing key'
					WHERE id = $1`, res.ID)
				if err == nil {
					_, err = tx.Exec(ctx, `SELECT pg_notify('`+notifyChannel+`', $1::text)`, res.ID)
					woken = append(woken, res.ID)
				}
			default:
				msg := "unknown publish error"
				if res.Err != nil {
					msg = res.Err.Error()
				}
				_, err = tx.Exec(ctx, `
					UPDATE requests SET publish_attempts = publish_attempts + 1, last_error = $2,
					       next_attempt_at = now() + make_interval(secs => $3), updated_at = now()
					WHERE id = $1`, res.ID, msg, retryIn(attempts[res.ID]+1).Seconds())
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, dbErr("claim outbox", err)
	}
	for _, id := range woken {
		s.hub.wake(id)
	}
	return n, nil
}

// OutboxStats describes the requests waiting to be published.
type OutboxStats struct {
	Depth        int
	OldestQueued time.Duration
}

// Outbox reports how many requests wait in the outbox and for how long the
// oldest has waited.
func (s *Store) Outbox(ctx context.Context) (OutboxStats, error) {
	var st OutboxStats
	var oldest *time.Time
	err := s.pool.QueryRow(ctx, `SELECT count(*), min(created_at) FROM requests WHERE status = 'queued'`).Scan(&st.Depth, &oldest)
	if err != nil {
		return st, dbErr("outbox stats", err)
	}
	if oldest != nil {
		st.OldestQueued = time.Since(*oldest)
	}
	return st, nil
}

// OpenCounts reports how many requests are open, by status (queued and
// pending; a status with none is present with 0). Only open rows are read:
// the partial index requests_open_expiry_idx holds exactly them.
func (s *Store) OpenCounts(ctx context.Context) (map[Status]int, error) {
	counts := map[Status]int{StatusQueued: 0, StatusPending: 0}
	rows, err := s.pool.Query(ctx, `SELECT status, count(*) FROM requests WHERE status IN ('queued', 'pending') GROUP BY status`)
	if err != nil {
		return nil, dbErr("open request counts", err)
	}
	for rows.Next() {
		var st Status
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return nil, dbErr("open request counts", err)
		}
		counts[st] = n
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("open request counts", err)
	}
	return counts, nil
}

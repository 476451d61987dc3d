package correlation

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// ErrNotCancellable means the request is already terminal.
var ErrNotCancellable = errors.New("request is already finished")

// Event is a message the gateway must publish on the events exchange.
type Event struct {
	RoutingKey string
	Body       []byte
}

// Cancel marks an open (queued or pending) request cancelled and wakes its
// waiters. The request.cancelled event that announces it to the responder
// is written to the event outbox by the same statement (a trigger, with
// every lifecycle event). A terminal request is returned with
// ErrNotCancellable.
func (s *Store) Cancel(ctx context.Context, id uuid.UUID) (Request, error) {
	var r Request
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		r, err = scanRequest(tx.QueryRow(ctx, `
			UPDATE requests SET status = 'cancelled', updated_at = now()
			WHERE id = $1 AND status IN ('queued', 'pending')
			RETURNING `+requestColumns, id))
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify('`+notifyChannel+`', $1::text)`, id)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		existing, gerr := s.Get(ctx, id)
		if gerr != nil {
			return Request{}, gerr
		}
		return existing, ErrNotCancellable
	}
	if err != nil {
		return Request{}, dbErr("cancel request", err)
	}
	s.hub.wake(id)
	if err := s.loadReplies(ctx, []*Request{&r}); err != nil {
		return Request{}, err
	}
	return r, nil
}

// OutboxEvent is an event waiting to be published.
type OutboxEvent struct {
	ID         int64
	RoutingKey string
	Body       []byte
	Attempts   int
}

// ClaimEvents takes up to limit due events (FOR UPDATE SKIP LOCKED), hands
// them to publish, deletes those it published and reschedules the others,
// in one transaction. publish returns one error (nil on success) per event.
func (s *Store) ClaimEvents(ctx context.Context, limit int, retryIn func(attempts int) time.Duration,
	publish func(context.Context, []OutboxEvent) []error) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT id, routing_key, body, attempts FROM event_outbox
			WHERE next_attempt_at <= now()
			ORDER BY id
			LIMIT $1
			FOR UPDATE SKIP LOCKED`, limit)
		if err != nil {
			return err
		}
		batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (OutboxEvent, error) {
			var e OutboxEvent
			err := row.Scan(&e.ID, &e.RoutingKey, &e.Body, &e.Attempts)
			return e, err
		})
		if err != nil || len(batch) == 0 {
			return err
		}
		n = len(batch)
		errs := publish(ctx, batch)
		var done []int64
		for i, e := range batch {
			if errs[i] == nil {
				done = append(done, e.ID)
				continue
			}
			if _, err := tx.Exec(ctx, `
				UPDATE event_outbox SET attempts = attempts + 1, last_error = $2,
				       next_attempt_at = now() + make_interval(secs => $3)
				WHERE id = $1`, e.ID, errs[i].Error(), retryIn(e.Attempts+1).Seconds()); err != nil {
				return err
			}
		}
		if len(done) > 0 {
			_, err = tx.Exec(ctx, `DELETE FROM event_outbox WHERE id = ANY($1)`, done)
		}
		return err
	})
	if err != nil {
		return 0, dbErr("claim events", err)
	}
	return n, nil
}

// Purge deletes terminal requests (with their blobs), dead letters and
// orphaned blobs older than retention
// (for a request with a webhook: retention after its delivery ended),
// in batches of at most batch rows so no statement holds locks for long. It
// returns how many rows it removed.
func (s *Store) Purge(ctx context.Context, retention time.Duration, batch int) (int, error) {
	total := 0
	for _, stmt := range []string{
		`DELETE FROM requests WHERE id IN (
			SELECT id FROM requests
			WHERE status IN ('replied', 'failed', 'expired', 'unroutable', 'cancelled', 'partial')
			  AND updated_at < now() - make_interval(secs => $1)
			  -- A webhook still being delivered keeps its request, and a
			  -- finished delivery keeps it for the retention period after
			  -- its last attempt (package webhook owns the table).
			  AND NOT EXISTS (
				SELECT 1 FROM webhook_deliveries d
				WHERE d.request_id = requests.id
				  AND (d.state = 'pending' OR d.updated_at >= now() - make_interval(secs => $1)))
			LIMIT $2)
		RETURNING id`,
		`DELETE FROM dead_letters WHERE id IN (
			SELECT id FROM dead_letters WHERE received_at < now() - make_interval(secs => $1) LIMIT $2)
		RETURNING NULL::uuid`,
		// A request's blobs go with it (a trigger; another unlinks the
		// large objects). A blob whose request was never recorded (the
		// submit failed after the upload, or the instance died) is an
		// orphan, removed once it is older than the retention period.
		`DELETE FROM blobs WHERE id IN (
			SELECT b.id FROM blobs b
			WHERE b.created_at < now() - make_interval(secs => $1)
			  AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.id = b.request_id)
			LIMIT $2)
		RETURNING NULL::uuid`,
	} {
		for ctx.Err() == nil {
			rows, err := s.pool.Query(ctx, stmt, retention.Seconds(), batch)
			if err != nil {
				return total, dbErr("purge", err)
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[*uuid.UUID])
			if err != nil {
				return total, dbErr("purge", err)
			}
			for _, id := range ids {
				if id != nil {
					s.hub.forgetRecent(*id) // never answer for a record that is gone
				}
			}
			total += len(ids)
			if len(ids) < batch {
				break
			}
		}
	}
	return total, nil
}

// KeepDeadLetter records a message that cannot be matched or processed,
// with the reason. It is how nothing is dropped silently.
func (s *Store) KeepDeadLetter(ctx context.Context, reason string, in IncomingReply) error {
	return s.deadLetter(ctx, reason, in)
}

// ListDeadLetters returns up to limit dead letters, newest first, with ids
// below before (0: from the newest), of one project (nil: all of them,
// including those that name no request).
func (s *Store) ListDeadLetters(ctx context.Context, project *uuid.UUID, limit int, before int64) ([]DeadLetter, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	var only *[16]byte
	if project != nil {
		b := [16]byte(*project)
		only = &b
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id, reason, source, coalesce(correlation_id, ''), coalesce(message_id, ''), headers, body, received_at
		FROM dead_letters WHERE id < $1 AND ($3::uuid IS NULL OR project_id = $3)
		ORDER BY id DESC LIMIT $2`, before, limit, only)
	if err != nil {
		return nil, dbErr("list dead letters", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DeadLetter, error) {
		var d DeadLetter
		err := row.Scan(&d.ID, &d.Reason, &d.Source, &d.CorrelationID, &d.MessageID, &d.Headers, &d.Body, &d.ReceivedAt)
		return d, err
	})
	if err != nil {
		return nil, dbErr("list dead letters", err)
	}
	return out, nil
}

// DeadLetterCount returns how many dead letters are kept.
func (s *Store) DeadLetterCount(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&n); err != nil {
		return 0, dbErr("count dead letters", err)
	}
	return n, nil
}

// Receipt says a request's reply reached its client, and how: "webhook" (the
// receiver answered 2xx) or "read" (a GET or long-poll returned it).
type Receipt struct {
	ID  uuid.UUID
	Via string
}

// MarkReplyDelivered records the first receipt of each replied (or failed)
// request in receipts and, in the same transaction, the event that announces
// it, built by announce. Later receipts of the same request change nothing:
// the event is recorded once per request. It returns how many were first.
func (s *Store) MarkReplyDelivered(ctx context.Context, receipts []Receipt,
	announce func(r Request, via string) Event) (int, error) {
	in := sortedByID(receipts, func(r Receipt) uuid.UUID { return r.ID })
	ids := make([]uuid.UUID, len(in))
	via := make(map[uuid.UUID]string, len(in))
	for i, r := range in {
		ids[i] = r.ID
		if _, ok := via[r.ID]; !ok {
			via[r.ID] = r.Via
		}
	}
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			WITH locked AS (
				SELECT id AS l_id FROM requests
				WHERE id = ANY($1::uuid[]) AND reply_delivered_at IS NULL AND status IN ('replied', 'failed', 'partial')
				ORDER BY id FOR NO KEY UPDATE)
			UPDATE requests SET reply_delivered_at = now()
			FROM locked
			WHERE id = l_id AND reply_delivered_at IS NULL
			RETURNING id, routing_key, status`, uuidArgs(ids))
		if err != nil {
			return err
		}
		var keys []string
		var bodies [][]byte
		var r Request
		_, err = pgx.ForEachRow(rows, []any{&r.ID, &r.RoutingKey, &r.Status}, func() error {
			ev := announce(r, via[r.ID])
			keys, bodies = append(keys, ev.RoutingKey), append(bodies, ev.Body)
			return nil
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		n = len(keys)
		_, err = tx.Exec(ctx, `INSERT INTO event_outbox (routing_key, body) SELECT * FROM unnest($1::text[], $2::bytea[])`, keys, bodies)
		return err
	})
	if err != nil {
		return 0, dbErr("record reply receipts", err)
	}
	return n, nil
}

// Filter selects requests for List.
type Filter struct {
	Status Status // empty: any
	// RoutingKey is a routing key, or a prefix ending in ".#" (a.b.# is
	// a.b and everything under it); empty: any.
	RoutingKey string
	Before     uuid.UUID // only ids below this one; uuid.Nil: from the newest
	Limit      int
	Project    *uuid.UUID // only this project's; nil: every project
}

// List returns requests matching f in descending id order, which for the
// gateway's own v7 ids is newest first.
func (s *Store) List(ctx context.Context, f Filter) ([]Request, error) {
	before := uuid.Max
	if f.Before != uuid.Nil {
		before = f.Before
	}
	exact, prefix := f.RoutingKey, ""
	if p, ok := strings.CutSuffix(f.RoutingKey, ".#"); ok {
		exact, prefix = p, p+"."
	} else if f.RoutingKey == "#" {
		exact = ""
	}
	var only *[16]byte
	if f.Project != nil {
		b := [16]byte(*f.Project)
		only = &b
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+requestColumns+` FROM requests
		WHERE id < $1
		  AND ($2 = '' OR status = $2)
		  AND ($3 = '' OR routing_key = $3 OR ($4 <> '' AND starts_with(routing_key, $4)))
		  AND ($6::uuid IS NULL OR project_id = $6)
		ORDER BY id DESC
		LIMIT $5`, [16]byte(before), string(f.Status), exact, prefix, f.Limit, only)
	if err != nil {
		return nil, dbErr("list requests", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Request, error) { return scanRequest(row) })
	if err != nil {
		return nil, dbErr("list requests", err)
	}
	ptrs := make([]*Request, len(out))
	for i := range out {
		ptrs[i] = &out[i]
	}
	if err := s.loadReplies(ctx, ptrs); err != nil {
		return nil, err
	}
	return out, nil
}

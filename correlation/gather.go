package correlation

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// storeGathered stores a reply to a gathering request (Expect-Replies: N
// greater than 1, or all). Gathers are rarer than ordinary requests and do
// not share the group-committed path: each reply is one transaction that
// locks its request row, so concurrent replies to one request (from every
// gateway instance) count one after another.
//
// A responder's first reply is kept; the same responder again (a
// redelivery) is a duplicate, before or after the request ended. The first
// reply also becomes the request's Reply. The Nth distinct reply ends the
// request: replied, or failed when every reply it gathered is an error.
// Any other responder's reply to a request that has ended, or that is past
// its deadline, is kept as a dead letter as for an ordinary request.
func (s *Store) storeGathered(ctx context.Context, id uuid.UUID, in IncomingReply) (Outcome, *Request, error) {
	var (
		outcome Outcome
		rec     *Request
		late    bool // open but past its deadline: the sweeper has not got to it
	)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		outcome, rec, late = "", nil, false
		var status Status
		var expected int
		var due bool
		err := tx.QueryRow(ctx, `
			SELECT status, replies_expected, expires_at <= now() FROM requests WHERE id = $1 FOR NO KEY UPDATE`,
			[16]byte(id)).Scan(&status, &expected, &due)
		if errors.Is(err, pgx.ErrNoRows) {
			outcome = OutcomeUnknown // purged since it was classified
			return nil
		}
		if err != nil {
			return err
		}
		var seen bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM request_replies WHERE request_id = $1 AND responder = $2)`,
			[16]byte(id), in.responder()).Scan(&seen); err != nil {
			return err
		}
		switch {
		case seen:
			outcome = OutcomeDuplicate
			return nil
		case status == StatusExpired || status == StatusPartial:
			outcome = OutcomeLate
			return nil
		case status.Terminal():
			outcome = OutcomeClosed
			return nil
		case due:
			outcome, late = OutcomeLate, true
			return nil
		}
		var n int
		if err := tx.QueryRow(ctx, `
			INSERT INTO request_replies (request_id, responder, seq, message_id, correlation_id, time_ms, body, failed)
			VALUES ($1, $2, (SELECT count(*) + 1 FROM request_replies WHERE request_id = $1), $3, $4, $5, $6, $7)
			RETURNING seq`,
			[16]byte(id), in.responder(), in.MessageID, in.CorrelationID, in.Time, in.Body, in.Failed).Scan(&n); err != nil {
			return err
		}
		done := expected != ExpectAll && n >= expected
		r, err := scanRequest(tx.QueryRow(ctx, `
			UPDATE requests
			SET status = CASE WHEN NOT $2 THEN status
			                  WHEN EXISTS (SELECT 1 FROM request_replies WHERE request_id = $1 AND NOT failed) THEN 'replied'
			                  ELSE 'failed' END,
			    -- the first reply is the request's reply
			    reply_from = coalesce(reply_from, $3), reply_message_id = coalesce(reply_message_id, $4),
			    reply_correlation_id = coalesce(reply_correlation_id, $5), reply_time_ms = coalesce(reply_time_ms, $6),
			    reply_body = coalesce(reply_body, $7), replied_at = coalesce(replied_at, now()),
			    picked_up_at = coalesce(picked_up_at, least(now(), greatest(created_at, to_timestamp($6::int8 / 1000.0)))),
			    updated_at = now()
			WHERE id = $1
			RETURNING `+requestColumns,
			[16]byte(id), done, in.responder(), in.MessageID, in.CorrelationID, in.Time, in.Body))
		if err != nil {
			return err
		}
		if done {
			if _, err := tx.Exec(ctx, `SELECT pg_notify('`+notifyChannel+`', $1::text)`, id.String()); err != nil {
				return err
			}
		}
		outcome, rec = OutcomeStored, &r
		return nil
	})
	if err != nil {
		return "", nil, dbErr("store gathered reply", err)
	}
	if outcome == OutcomeStored {
		if rec.Status.Terminal() {
			s.hub.wake(id) // waiters read the record with every reply
		}
		return outcome, rec, nil
	}
	if outcome == OutcomeDuplicate {
		return outcome, nil, nil
	}
	if late {
		// Close it now so its waiters hear about it.
		if _, err := s.expire(ctx, `id = $1 AND`, id); err != nil {
			return "", nil, err
		}
	}
	if err := s.deadLetter(ctx, string(outcome), in); err != nil {
		return "", nil, err
	}
	return outcome, nil, nil
}

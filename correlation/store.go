package correlation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// notifyChannel is the Postgres NOTIFY channel that carries the id of every
// request that reached a terminal status.
const notifyChannel = "switchboard_requests"

// Store is the correlation store. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	hub    *hub
	logger *slog.Logger
}

// NewStore returns a store over pool. Call Listen (usually in its own
// goroutine) so waiters are woken by replies stored on other instances.
func NewStore(pool *pgxpool.Pool, logger *slog.Logger) *Store {
	return &Store{pool: pool, hub: newHub(), logger: logger}
}

// Ping checks that Postgres answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return dbErr("ping", err)
	}
	return nil
}

const requestColumns = `id, routing_key, status, time_ms, expires_at, coalesce(reply_to, ''), body,
	created_at, published_at, publish_attempts,
	reply_message_id, reply_correlation_id, reply_time_ms, reply_body, replied_at`

func scanRequest(row pgx.Row) (Request, error) {
	var (
		r          Request
		replyMsgID *string
		replyCorr  *string
		replyTime  *int64
		replyBody  []byte
		repliedAt  *time.Time
	)
	err := row.Scan(&r.ID, &r.RoutingKey, &r.Status, &r.Time, &r.ExpiresAt, &r.ReplyTo, &r.Body,
		&r.CreatedAt, &r.PublishedAt, &r.Attempts,
		&replyMsgID, &replyCorr, &replyTime, &replyBody, &repliedAt)
	if err != nil {
		return Request{}, err
	}
	if repliedAt != nil {
		r.Reply = &Reply{Body: replyBody, ReceivedAt: *repliedAt}
		if replyMsgID != nil {
			r.Reply.MessageID = *replyMsgID
		}
		if replyCorr != nil {
			r.Reply.CorrelationID = *replyCorr
		}
		if replyTime != nil {
			r.Reply.Time = *replyTime
		}
	}
	return r, nil
}

// Create records a new request with status queued. When the id already
// exists with the same routing key and body, it returns the existing record
// and created=false: the repeat is idempotent. The same id with a different
// routing key or body is ErrConflict.
func (s *Store) Create(ctx context.Context, n NewRequest) (r Request, created bool, err error) {
	var replyTo *string
	if n.ReplyTo != "" {
		replyTo = &n.ReplyTo
	}
	sum := digest(n.Body)
	row := s.pool.QueryRow(ctx, `
		INSERT INTO requests (id, routing_key, status, time_ms, expires_at, reply_to, body, body_sha256, next_attempt_at)
		VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8)
		ON CONFLICT (id) DO NOTHING
		RETURNING `+requestColumns,
		n.ID, n.RoutingKey, n.Time, n.ExpiresAt, replyTo, n.Body, sum, n.PublishAfter)
	r, err = scanRequest(row)
	if err == nil {
		return r, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Request{}, false, dbErr("insert request", err)
	}

	// The id exists: a repeat of the same request, or a collision.
	var existingKey string
	var existingSum []byte
	err = s.pool.QueryRow(ctx, `SELECT routing_key, body_sha256 FROM requests WHERE id = $1`, n.ID).
		Scan(&existingKey, &existingSum)
	if err != nil {
		// Not found here means the row vanished in between; there is no
		// delete path, so treat it as a database problem.
		return Request{}, false, dbErr("read existing request", err)
	}
	if existingKey != n.RoutingKey || !bytes.Equal(existingSum, sum) {
		return Request{}, false, ErrConflict
	}
	r, err = s.Get(ctx, n.ID)
	return r, false, err
}

// Get returns the request with that id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id uuid.UUID) (Request, error) {
	r, err := scanRequest(s.pool.QueryRow(ctx, `SELECT `+requestColumns+` FROM requests WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Request{}, ErrNotFound
	}
	if err != nil {
		return Request{}, dbErr("get request", err)
	}
	return r, nil
}

// MarkPublished records the broker's confirm: a queued request becomes
// pending. A request that already moved on (a fast reply, the sweeper) is
// left as it is.
func (s *Store) MarkPublished(ctx context.Context, id uuid.UUID) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE requests
		SET status = 'pending', published_at = now(), updated_at = now(),
		    publish_attempts = publish_attempts + 1, last_error = NULL
		WHERE id = $1 AND status = 'queued'`, id)
	if err != nil {
		return dbErr("mark published", err)
	}
	return nil
}

// MarkUnroutable records that the broker returned the request because no
// queue is bound for its routing key. It is terminal.
func (s *Store) MarkUnroutable(ctx context.Context, id uuid.UUID) error {
	tag, err := s.pool.Exec(ctx, `
		WITH u AS (
			UPDATE requests
			SET status = 'unroutable', updated_at = now(), publish_attempts = publish_attempts + 1,
			    last_error = 'returned by the broker: no queue bound for the routing key'
			WHERE id = $1 AND status = 'queued'
			RETURNING id)
		SELECT pg_notify('`+notifyChannel+`', id::text) FROM u`, id)
	if err != nil {
		return dbErr("mark unroutable", err)
	}
	if tag.RowsAffected() > 0 {
		s.hub.wake(id)
	}
	return nil
}

// RetryLater leaves a request queued for the outbox relay, due at once,
// after the submitter could not publish it.
func (s *Store) RetryLater(ctx context.Context, id uuid.UUID, cause error) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE requests
		SET next_attempt_at = now(), publish_attempts = publish_attempts + 1, last_error = $2, updated_at = now()
		WHERE id = $1 AND status = 'queued'`, id, cause.Error())
	if err != nil {
		return dbErr("schedule republish", err)
	}
	return nil
}

// StoreReply matches a reply to its request. The first reply of an open
// request is stored (status replied, or failed when Failed is set); later
// ones are duplicates. A reply that matches no open request is kept as a
// dead letter, with the outcome saying why.
func (s *Store) StoreReply(ctx context.Context, in IncomingReply) (Outcome, error) {
	in = in.storable()
	id, parseErr := uuid.Parse(in.CorrelationID)
	if parseErr == nil {
		status := StatusReplied
		if in.Failed {
			status = StatusFailed
		}
		tag, err := s.pool.Exec(ctx, `
			WITH u AS (
				UPDATE requests
				SET status = $2, reply_message_id = $3, reply_correlation_id = $4, reply_time_ms = $5,
				    reply_body = $6, replied_at = now(), updated_at = now()
				WHERE id = $1 AND status IN ('queued', 'pending') AND expires_at > now()
				RETURNING id)
			SELECT pg_notify('`+notifyChannel+`', id::text) FROM u`,
			id, status, in.MessageID, in.CorrelationID, in.Time, in.Body)
		if err != nil {
			return "", dbErr("store reply", err)
		}
		if tag.RowsAffected() > 0 {
			s.hub.wake(id)
			return OutcomeStored, nil
		}
	}

	outcome := OutcomeUnknown
	if parseErr == nil {
		var status Status
		err := s.pool.QueryRow(ctx, `SELECT status FROM requests WHERE id = $1`, id).Scan(&status)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			outcome = OutcomeUnknown
		case err != nil:
			return "", dbErr("classify reply", err)
		case status == StatusReplied || status == StatusFailed:
			return OutcomeDuplicate, nil
		case status == StatusQueued || status == StatusPending:
			// Open but past its deadline: the sweeper has not got to it
			// yet. Close it now so its waiters hear about it.
			if _, err := s.expire(ctx, `id = $1 AND`, id); err != nil {
				return "", err
			}
			outcome = OutcomeLate
		case status == StatusExpired:
			outcome = OutcomeLate
		default:
			outcome = OutcomeClosed
		}
	}
	if err := s.deadLetter(ctx, string(outcome), in); err != nil {
		return "", err
	}
	return outcome, nil
}

func (s *Store) deadLetter(ctx context.Context, reason string, in IncomingReply) error {
	in = in.storable()
	headers := in.Headers
	if headers == nil {
		headers = map[string]any{}
	}
	h, err := json.Marshal(headers)
	if err != nil {
		h = []byte(`{}`)
	}
	body := in.Body
	if body == nil {
		body = []byte{}
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO dead_letters (reason, source, correlation_id, message_id, headers, body)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		reason, in.Source, in.CorrelationID, in.MessageID, h, body)
	if err != nil {
		return dbErr("insert dead letter", err)
	}
	return nil
}

// DeadLetter is one kept message that matched no open request or could
// not be processed.
type DeadLetter struct {
	ID            int64
	Reason        string
	Source        string
	CorrelationID string
	MessageID     string
	Headers       map[string]any
	Body          []byte
	ReceivedAt    time.Time
}

// DeadLetters returns the dead letters kept for a correlation id, oldest first.
func (s *Store) DeadLetters(ctx context.Context, correlationID string) ([]DeadLetter, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, reason, source, coalesce(correlation_id, ''), coalesce(message_id, ''), headers, body, received_at
		FROM dead_letters WHERE correlation_id = $1 ORDER BY id`, correlationID)
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

// ExpireDue marks every open request past its deadline expired and wakes
// its waiters. It returns how many it closed. Several instances may run it
// at once; each request is expired exactly once.
func (s *Store) ExpireDue(ctx context.Context) (int, error) {
	return s.expire(ctx, ``)
}

func (s *Store) expire(ctx context.Context, extraWhere string, args ...any) (int, error) {
	rows, err := s.pool.Query(ctx, `
		WITH u AS (
			UPDATE requests SET status = 'expired', updated_at = now()
			WHERE `+extraWhere+` status IN ('queued', 'pending') AND expires_at <= now()
			RETURNING id)
		SELECT id, pg_notify('`+notifyChannel+`', id::text) FROM u`, args...)
	if err != nil {
		return 0, dbErr("expire requests", err)
	}
	ids, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (uuid.UUID, error) {
		var id uuid.UUID
		var ignored any
		err := row.Scan(&id, &ignored)
		return id, err
	})
	if err != nil {
		return 0, dbErr("expire requests", err)
	}
	for _, id := range ids {
		s.hub.wake(id)
	}
	return len(ids), nil
}

// dbErr wraps err with op, and marks failures to reach Postgres (as opposed
// to errors the server reported) as ErrUnavailable.
func dbErr(op string, err error) error {
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	case errors.As(err, &pgErr):
		// The server answered. Some server errors still mean "not now".
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", "53300": // admin shutdown, crash shutdown, cannot connect now, too many connections
			return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
		}
		return fmt.Errorf("%s: %w", op, err)
	default:
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
}

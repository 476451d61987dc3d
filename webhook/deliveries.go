package webhook

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-gw/switchboard/correlation"
)

// States of a delivery.
const (
	StatePending   = "pending"   // due now or later; being attempted when leased
	StateDelivered = "delivered" // the receiver answered 2xx
	StateFailed    = "failed"    // gave up: 410, a blocked address, or the schedule ran out
)

// Outcomes of one attempt.
const (
	OutcomeDelivered = "delivered"
	OutcomeRetry     = "retry"
	OutcomeFailed    = "failed"
)

// Sentinel errors of the delivery store.
var (
	// ErrNoDelivery means the request has no webhook delivery (no Reply-To,
	// or it has not ended yet).
	ErrNoDelivery = errors.New("no webhook delivery for this request")
	// ErrNotRetryable means a manual retry was asked of a delivery that has
	// not failed.
	ErrNotRetryable = errors.New("only a failed delivery can be retried")
)

// Delivery is the state of one request's webhook delivery.
type Delivery struct {
	RequestID     uuid.UUID
	URL           string
	State         string
	EventType     string    // request.<status>
	EventAt       time.Time // when the request ended
	Attempts      int
	RoundStart    int // attempts before the latest manual retry
	NextAttemptAt time.Time
	LastStatus    *int
	LastError     string
	DoneAt        *time.Time
}

// Attempt is one recorded attempt.
type Attempt struct {
	Attempt      int
	URL          string
	StartedAt    time.Time
	Duration     time.Duration
	HTTPStatus   *int
	Error        string
	ResponseBody string
	Outcome      string
}

// Store holds the delivery tables. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns the delivery store over pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

const deliveryColumns = `request_id, url, state, event_type, event_at, attempts, round_start,
	next_attempt_at, last_status, coalesce(last_error, ''), done_at`

func scanDelivery(row pgx.Row) (Delivery, error) {
	var d Delivery
	err := row.Scan(&d.RequestID, &d.URL, &d.State, &d.EventType, &d.EventAt, &d.Attempts, &d.RoundStart,
		&d.NextAttemptAt, &d.LastStatus, &d.LastError, &d.DoneAt)
	return d, err
}

// Get returns the delivery of a request, or ErrNoDelivery.
func (s *Store) Get(ctx context.Context, id uuid.UUID) (Delivery, error) {
	d, err := scanDelivery(s.pool.QueryRow(ctx,
		`SELECT `+deliveryColumns+` FROM webhook_deliveries WHERE request_id = $1`, [16]byte(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, ErrNoDelivery
	}
	if err != nil {
		return Delivery{}, correlation.DBError("get delivery", err)
	}
	return d, nil
}

// Attempts lists a request's attempts, oldest first.
func (s *Store) Attempts(ctx context.Context, id uuid.UUID) ([]Attempt, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT attempt, url, started_at, duration_ms, http_status, coalesce(error, ''), coalesce(response_body, ''), outcome
		FROM webhook_attempts WHERE request_id = $1 ORDER BY attempt`, [16]byte(id))
	if err != nil {
		return nil, correlation.DBError("list attempts", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Attempt, error) {
		var a Attempt
		var ms float64
		err := row.Scan(&a.Attempt, &a.URL, &a.StartedAt, &ms, &a.HTTPStatus, &a.Error, &a.ResponseBody, &a.Outcome)
		a.Duration = time.Duration(ms * float64(time.Millisecond))
		return a, err
	})
	if err != nil {
		return nil, correlation.DBError("list attempts", err)
	}
	return out, nil
}

// Retry puts a failed delivery back to pending, due at once, with the
// retry schedule starting again.
func (s *Store) Retry(ctx context.Context, id uuid.UUID) (Delivery, error) {
	d, err := scanDelivery(s.pool.QueryRow(ctx, `
		UPDATE webhook_deliveries
		SET state = 'pending', round_start = attempts, next_attempt_at = now(), lease = NULL,
		    done_at = NULL, updated_at = now()
		WHERE request_id = $1 AND state = 'failed'
		RETURNING `+deliveryColumns, [16]byte(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		if _, gerr := s.Get(ctx, id); gerr != nil {
			return Delivery{}, gerr
		}
		return Delivery{}, ErrNotRetryable
	}
	if err != nil {
		return Delivery{}, correlation.DBError("retry delivery", err)
	}
	return d, nil
}

// claim leases up to limit due deliveries for leaseFor: other instances
// skip the rows it locks and, once they are leased, do not see them as due
// until the lease has run out.
func (s *Store) claim(ctx context.Context, limit int, leaseFor time.Duration) ([]Delivery, uuid.UUID, error) {
	lease := uuid.New()
	rows, err := s.pool.Query(ctx, `
		WITH due AS (
			SELECT request_id AS due_id FROM webhook_deliveries
			WHERE state = 'pending' AND next_attempt_at <= now()
			ORDER BY next_attempt_at
			LIMIT $1
			FOR UPDATE SKIP LOCKED)
		UPDATE webhook_deliveries
		SET lease = $2, next_attempt_at = now() + make_interval(secs => $3)
		FROM due
		WHERE request_id = due_id
		RETURNING `+deliveryColumns, limit, [16]byte(lease), leaseFor.Seconds())
	if err != nil {
		return nil, lease, correlation.DBError("claim deliveries", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Delivery, error) { return scanDelivery(row) })
	if err != nil {
		return nil, lease, correlation.DBError("claim deliveries", err)
	}
	return out, lease, nil
}

// result is what one attempt found, to be recorded.
type result struct {
	attempt   Attempt
	state     string    // the delivery's state after it
	nextAt    time.Time // when pending: the next attempt
	deadCause string    // when failed: why, for the dead letter
}

// errLeaseLost means the attempt's lease was gone when its outcome was to
// be recorded: it took longer than the lease and another instance may have
// attempted the delivery again.
var errLeaseLost = errors.New("delivery lease lost")

// record stores an attempt and the delivery's new state, under the lease it
// was claimed with, in one transaction. A delivery that gives up leaves a
// dead-letter record with its payload.
func (s *Store) record(ctx context.Context, d Delivery, lease uuid.UUID, r result, payload []byte) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var next *time.Time
		if r.state == StatePending {
			next = &r.nextAt
		}
		tag, err := tx.Exec(ctx, `
			UPDATE webhook_deliveries
			SET attempts = attempts + 1, state = $3, lease = NULL,
			    next_attempt_at = coalesce($4, next_attempt_at),
			    last_status = $5, last_error = $6, updated_at = now(),
			    done_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
			WHERE request_id = $1 AND lease = $2`,
			[16]byte(d.RequestID), [16]byte(lease), r.state, next, r.attempt.HTTPStatus, nullIfEmpty(r.attempt.Error))
		if err != nil {
			return correlation.DBError("record attempt", err)
		}
		if tag.RowsAffected() == 0 {
			return errLeaseLost
		}
		a := r.attempt
		if _, err := tx.Exec(ctx, `
			INSERT INTO webhook_attempts (request_id, attempt, url, started_at, duration_ms, http_status, error, response_body, outcome)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			[16]byte(d.RequestID), a.Attempt, a.URL, a.StartedAt, float64(a.Duration)/float64(time.Millisecond),
			a.HTTPStatus, nullIfEmpty(a.Error), nullIfEmpty(a.ResponseBody), a.Outcome); err != nil {
			return correlation.DBError("record attempt", err)
		}
		if r.state != StateFailed {
			return nil
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO dead_letters (reason, source, correlation_id, message_id, headers, body)
			VALUES ('webhook_failed', 'webhook', $1, $1, $2, $3)`,
			d.RequestID.String(), map[string]any{
				"url": d.URL, "attempts": a.Attempt, "cause": r.deadCause, "last_status": a.HTTPStatus, "last_error": a.Error,
			}, payload); err != nil {
			return correlation.DBError("record failed delivery", err)
		}
		return nil
	})
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	return &s
}

// truncateText keeps at most n bytes of b, as text: a rune cut in half
// and any invalid UTF-8 become U+FFFD when stored.
func truncateText(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

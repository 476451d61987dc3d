package correlation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-gw/switchboard/internal/groupcommit"
)

// notifyChannel is the Postgres NOTIFY channel that carries the id of every
// request that reached a terminal status.
const notifyChannel = "switchboard_requests"

// Store is the correlation store. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	hub    *hub
	logger *slog.Logger
	owners owners

	// Group commits of the hot path: concurrent inserts, publish confirms
	// and replies each share one statement and one commit.
	creates   *groupcommit.Batcher[NewRequest, createResult]
	published *groupcommit.Batcher[uuid.UUID, struct{}]
	replies   *groupcommit.Batcher[replyRow, *Request]
}

// Batch limits. A NOTIFY payload holds at most 8000 bytes, so a reply batch
// sends one notification per notifyIDs ids (37 bytes each).
//
// One flush of each kind at a time: calls that arrive meanwhile wait for
// the next, so batches are as large as the load makes them. Two flushers
// halved the batches and cost Postgres about 17% more CPU per round trip
// in the bench, for no gain in latency (BENCHMARKS.md).
const (
	maxBatch    = 256
	maxFlushers = 1
	notifyIDs   = 200
)

// NewStore returns a store over pool. Call Listen (usually in its own
// goroutine) so waiters are woken by replies stored on other instances.
func NewStore(pool *pgxpool.Pool, logger *slog.Logger) *Store {
	s := &Store{pool: pool, hub: newHub(), logger: logger}
	s.creates = groupcommit.New(maxBatch, maxFlushers, s.flushCreates)
	s.published = groupcommit.New(maxBatch, maxFlushers, s.flushPublished)
	s.replies = groupcommit.New(maxBatch, maxFlushers, s.flushReplies)
	return s
}

// Ping checks that Postgres answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return dbErr("ping", err)
	}
	return nil
}

const requestColumns = `id, routing_key, status, time_ms, expires_at, coalesce(reply_to, ''), body, project_id, key_id,
	created_at, published_at, publish_attempts,
	reply_message_id, reply_correlation_id, reply_time_ms, reply_body, replied_at,
	coalesce(traceparent, ''), coalesce(tracestate, ''), picked_up_at, stalled_at,
	replies_expected, coalesce(reply_from, ''), body_claim`

func scanRequest(row pgx.Row) (Request, error) {
	var (
		r          Request
		replyMsgID *string
		replyCorr  *string
		replyTime  *int64
		replyBody  []byte
		repliedAt  *time.Time
		replyFrom  string
	)
	var keyID *uuid.UUID
	err := row.Scan(&r.ID, &r.RoutingKey, &r.Status, &r.Time, &r.ExpiresAt, &r.ReplyTo, &r.Body, &r.ProjectID, &keyID,
		&r.CreatedAt, &r.PublishedAt, &r.Attempts,
		&replyMsgID, &replyCorr, &replyTime, &replyBody, &repliedAt,
		&r.TraceParent, &r.TraceState, &r.PickedUpAt, &r.StalledAt,
		&r.RepliesExpected, &replyFrom, &r.Claim)
	if err != nil {
		return Request{}, err
	}
	if keyID != nil {
		r.KeyID = *keyID
	}
	if repliedAt != nil {
		r.Reply = &Reply{From: replyFrom, Body: replyBody, ReceivedAt: *repliedAt}
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
	s.hub.opened(n.ID)
	res, err := s.creates.Do(ctx, n)
	if err != nil {
		s.hub.forget(n.ID)
		return Request{}, false, err
	}
	if !res.inserted {
		s.hub.forget(n.ID) // a repeat: what it is now is read below
	}
	if res.inserted {
		r = Request{
			ID: n.ID, RoutingKey: n.RoutingKey, Status: StatusQueued, Time: n.Time,
			ExpiresAt: n.ExpiresAt, ReplyTo: n.ReplyTo, Body: n.Body, Claim: n.Claim, CreatedAt: res.createdAt,
			ProjectID: n.ProjectID, KeyID: n.KeyID, TraceParent: n.TraceParent, TraceState: n.TraceState,
			RepliesExpected: n.expected(),
		}
		s.owners.put(n.ID, Owner{ProjectID: n.ProjectID, RoutingKey: n.RoutingKey})
		return r, true, nil
	}

	// The id exists: a repeat of the same request, or a collision. Another
	// project's id is a collision too, and says nothing more about it.
	var existingKey string
	var existingSum []byte
	var existingProject uuid.UUID
	err = s.pool.QueryRow(ctx, `SELECT routing_key, body_sha256, project_id FROM requests WHERE id = $1`, n.ID).
		Scan(&existingKey, &existingSum, &existingProject)
	if err != nil {
		// Not found here means the row vanished in between (retention
		// removed a repeat's original); treat it as a database problem.
		return Request{}, false, dbErr("read existing request", err)
	}
	if existingProject != n.ProjectID || existingKey != n.RoutingKey || !bytes.Equal(existingSum, digest(n.Body)) {
		return Request{}, false, ErrConflict
	}
	r, err = s.Get(ctx, n.ID)
	return r, false, err
}

// createResult is what one row of a batched insert returns.
type createResult struct {
	inserted  bool // false: the id already existed
	createdAt time.Time
}

// flushCreates inserts a batch of new requests in one statement. Ids that
// exist already (a repeat, or twice in the batch) are left to Create's
// conflict check. Rows go in in id order, as in every batched statement, so
// concurrent batches take their row locks in the same order and cannot
// deadlock one another.
func (s *Store) flushCreates(ctx context.Context, batch []NewRequest) ([]createResult, error) {
	in := sortedByID(batch, func(r NewRequest) uuid.UUID { return r.ID })
	n := len(in)
	ids := make([]uuid.UUID, n)
	keys := make([]string, n)
	times := make([]int64, n)
	expires := make([]time.Time, n)
	replyTo := make([]*string, n)
	bodies := make([][]byte, n)
	sums := make([][]byte, n)
	next := make([]time.Time, n)
	projects := make([][16]byte, n)
	keyIDs := make([]*[16]byte, n)
	parents := make([]*string, n)
	states := make([]*string, n)
	expected := make([]int32, n)
	claims := make([]bool, n)
	for i, r := range in {
		expected[i] = int32(r.expected())
		claims[i] = r.Claim
		if r.TraceParent != "" {
			parents[i] = &in[i].TraceParent
		}
		if r.TraceState != "" {
			states[i] = &in[i].TraceState
		}
		projects[i] = r.ProjectID
		if r.KeyID != uuid.Nil {
			k := [16]byte(r.KeyID)
			keyIDs[i] = &k
		}
		ids[i], keys[i], times[i], expires[i], bodies[i], next[i] = r.ID, r.RoutingKey, r.Time, r.ExpiresAt, r.Body, r.PublishAfter
		if r.ReplyTo != "" {
			replyTo[i] = &in[i].ReplyTo
		}
		sums[i] = digest(r.Body)
	}
	rows, err := s.pool.Query(ctx, `
		INSERT INTO requests (id, routing_key, status, time_ms, expires_at, reply_to, body, body_sha256, next_attempt_at, project_id, key_id,
		                      traceparent, tracestate, replies_expected, body_claim)
		SELECT id, routing_key, 'queued', time_ms, expires_at, reply_to, body, body_sha256, next_attempt_at, project_id, key_id,
		       traceparent, tracestate, replies_expected, body_claim
		FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::timestamptz[], $5::text[], $6::bytea[], $7::bytea[], $8::timestamptz[], $9::uuid[], $10::uuid[],
		            $11::text[], $12::text[], $13::int4[], $14::bool[])
			AS t(id, routing_key, time_ms, expires_at, reply_to, body, body_sha256, next_attempt_at, project_id, key_id, traceparent, tracestate,
			     replies_expected, body_claim)
		ON CONFLICT (id) DO NOTHING
		RETURNING id, created_at`,
		uuidArgs(ids), keys, times, expires, replyTo, bodies, sums, next, projects, keyIDs, parents, states, expected, claims)
	if err != nil {
		return nil, dbErr("insert requests", err)
	}
	inserted := make(map[uuid.UUID]time.Time, n)
	var id uuid.UUID
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &at}, func() error {
		inserted[id] = at
		return nil
	})
	if err != nil {
		return nil, dbErr("insert requests", err)
	}
	out := make([]createResult, n)
	for i, r := range batch {
		if at, ok := inserted[r.ID]; ok {
			out[i] = createResult{inserted: true, createdAt: at}
			delete(inserted, r.ID) // a second copy in the batch is a repeat
		}
	}
	return out, nil
}

// Get returns the request with that id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id uuid.UUID) (Request, error) {
	r, err := scanRequest(s.pool.QueryRow(ctx, `SELECT `+requestColumns+` FROM requests WHERE id = $1`, [16]byte(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return Request{}, ErrNotFound
	}
	if err != nil {
		return Request{}, dbErr("get request", err)
	}
	if err := s.loadReplies(ctx, []*Request{&r}); err != nil {
		return Request{}, err
	}
	return r, nil
}

// loadReplies fills in the gathered replies of the gathering requests
// among rs, in one query; ordinary requests need none.
func (s *Store) loadReplies(ctx context.Context, rs []*Request) error {
	var ids []uuid.UUID
	byID := make(map[uuid.UUID]*Request)
	for _, r := range rs {
		if r.Gathers() {
			ids = append(ids, r.ID)
			byID[r.ID] = r
			r.Replies = []Reply{}
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := s.pool.Query(ctx, `
		SELECT request_id, responder, message_id, correlation_id, time_ms, body, failed, received_at
		FROM request_replies WHERE request_id = ANY($1::uuid[])
		ORDER BY request_id, seq`, uuidArgs(ids))
	if err != nil {
		return dbErr("read gathered replies", err)
	}
	var id uuid.UUID
	var rp Reply
	_, err = pgx.ForEachRow(rows, []any{&id, &rp.From, &rp.MessageID, &rp.CorrelationID, &rp.Time, &rp.Body, &rp.Failed, &rp.ReceivedAt},
		func() error {
			r := byID[id]
			rp.Body = slices.Clone(rp.Body)
			r.Replies = append(r.Replies, rp)
			return nil
		})
	if err != nil {
		return dbErr("read gathered replies", err)
	}
	return nil
}

// MarkPublished records the broker's confirm: a queued request becomes
// pending. A request that already moved on (a fast reply, the sweeper) is
// left as it is.
func (s *Store) MarkPublished(ctx context.Context, id uuid.UUID) error {
	_, err := s.published.Do(ctx, id)
	return err
}

func (s *Store) flushPublished(ctx context.Context, ids []uuid.UUID) ([]struct{}, error) {
	_, err := s.pool.Exec(ctx, `
		WITH locked AS (
			SELECT id FROM requests WHERE id = ANY($1::uuid[]) AND status = 'queued' ORDER BY id FOR NO KEY UPDATE)
		UPDATE requests
		SET status = 'pending', published_at = now(), updated_at = now(),
		    publish_attempts = publish_attempts + 1, last_error = NULL
		FROM locked
		WHERE requests.id = locked.id AND status = 'queued'`, uuidArgs(ids))
	if err != nil {
		return nil, dbErr("mark published", err)
	}
	return make([]struct{}, len(ids)), nil
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
// ones are duplicates. A gathering request (Expect-Replies) keeps the first
// reply of each responder instead, and ends at its Nth (see
// storeGathered). A reply that matches no open request is kept as a dead
// letter, with the outcome saying why.
func (s *Store) StoreReply(ctx context.Context, in IncomingReply) (Outcome, error) {
	outcome, _, err := s.StoreReplyRecord(ctx, in)
	return outcome, err
}

// StoreReplyRecord is StoreReply that also returns the request as the reply
// left it when the outcome is OutcomeStored (nil otherwise), so the caller
// can tell how long the reply took.
func (s *Store) StoreReplyRecord(ctx context.Context, in IncomingReply) (Outcome, *Request, error) {
	in = in.storable()
	id, parseErr := uuid.Parse(in.CorrelationID)
	if parseErr == nil {
		status := StatusReplied
		if in.Failed {
			status = StatusFailed
		}
		rec, err := s.replies.Do(ctx, replyRow{id: id, status: status, reply: in})
		if err != nil {
			return "", nil, err
		}
		if rec != nil {
			return OutcomeStored, rec, nil
		}
	}

	outcome := OutcomeUnknown
	if parseErr == nil {
		var status Status
		var expected int
		err := s.pool.QueryRow(ctx, `SELECT status, replies_expected FROM requests WHERE id = $1`, id).Scan(&status, &expected)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			outcome = OutcomeUnknown
		case err != nil:
			return "", nil, dbErr("classify reply", err)
		case expected != 1:
			// A gathering request: the batched path leaves it alone.
			return s.storeGathered(ctx, id, in)
		case status == StatusReplied || status == StatusFailed:
			return OutcomeDuplicate, nil, nil
		case status == StatusQueued || status == StatusPending:
			// Open but past its deadline: the sweeper has not got to it
			// yet. Close it now so its waiters hear about it.
			if _, err := s.expire(ctx, `id = $1 AND`, id); err != nil {
				return "", nil, err
			}
			outcome = OutcomeLate
		case status == StatusExpired:
			outcome = OutcomeLate
		default:
			outcome = OutcomeClosed
		}
	}
	if err := s.deadLetter(ctx, string(outcome), in); err != nil {
		return "", nil, err
	}
	return outcome, nil, nil
}

// uuidArgs passes ids to pgx as raw 16-byte values: uuid.UUID goes through
// its driver.Valuer, a string per id that Postgres then parses back.
func uuidArgs(ids []uuid.UUID) [][16]byte {
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// sortedByID returns a copy of batch in id order (Postgres's uuid order);
// entries with the same id keep their order of arrival.
func sortedByID[T any](batch []T, id func(T) uuid.UUID) []T {
	out := slices.Clone(batch)
	slices.SortStableFunc(out, func(a, b T) int {
		x, y := id(a), id(b)
		return bytes.Compare(x[:], y[:])
	})
	return out
}

// replyRow is one reply in a batched update.
type replyRow struct {
	id     uuid.UUID
	status Status
	reply  IncomingReply
}

// flushReplies stores a batch of first replies in one statement: each open,
// unexpired request named in the batch takes its reply, and the ids that
// did are announced to every instance in as few notifications as fit. The
// updated records go straight to this process's waiters, which need not
// read them again. A nil result means the request was not open (or its id
// came earlier in the same batch); StoreReply then classifies the reply.
func (s *Store) flushReplies(ctx context.Context, in []replyRow) ([]*Request, error) {
	n := len(in)
	sorted := sortedByID(in, func(r replyRow) uuid.UUID { return r.id })
	ids := make([]uuid.UUID, 0, n)
	statuses := make([]string, 0, n)
	msgIDs := make([]string, 0, n)
	corrs := make([]string, 0, n)
	times := make([]int64, 0, n)
	bodies := make([][]byte, 0, n)
	froms := make([]string, 0, n)
	seen := make(map[uuid.UUID]bool, n)
	for _, r := range sorted {
		if seen[r.id] {
			continue // only one reply per request per statement
		}
		seen[r.id] = true
		ids = append(ids, r.id)
		statuses = append(statuses, string(r.status))
		msgIDs = append(msgIDs, r.reply.MessageID)
		corrs = append(corrs, r.reply.CorrelationID)
		times = append(times, r.reply.Time)
		bodies = append(bodies, r.reply.Body)
		froms = append(froms, r.reply.responder())
	}
	rows, err := s.pool.Query(ctx, `
		WITH v AS (
			SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::bytea[], $7::text[])
				AS v(v_id, v_status, v_msg, v_corr, v_time, v_body, v_from)),
		locked AS (
			SELECT id AS l_id FROM requests
			WHERE id = ANY($1::uuid[]) AND status IN ('queued', 'pending') AND replies_expected = 1
			ORDER BY id FOR NO KEY UPDATE),
		u AS (
			UPDATE requests
			SET status = v_status, reply_from = v_from, reply_message_id = v_msg, reply_correlation_id = v_corr,
			    reply_time_ms = v_time, reply_body = v_body, replied_at = now(), updated_at = now(),
			    -- a reply proves the pick-up, when no request.received came
			    -- first: no later than the reply's own time (kept between
			    -- the request's creation and now)
			    picked_up_at = coalesce(picked_up_at, least(now(), greatest(created_at, to_timestamp(v_time / 1000.0))))
			FROM v, locked
			WHERE id = v_id AND id = l_id AND status IN ('queued', 'pending') AND replies_expected = 1 AND expires_at > now()
			RETURNING `+requestColumns+`),
		n AS (
			SELECT pg_notify('`+notifyChannel+`', string_agg(id::text, ','))
			FROM (SELECT id, (row_number() OVER () - 1) / `+fmt.Sprint(notifyIDs)+` AS g FROM u) AS numbered
			GROUP BY g)
		SELECT u.* FROM u, (SELECT count(*) FROM n) AS notified`,
		uuidArgs(ids), statuses, msgIDs, corrs, times, bodies, froms)
	if err != nil {
		return nil, dbErr("store replies", err)
	}
	stored := make(map[uuid.UUID]*Request, len(ids))
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			rows.Close()
			return nil, dbErr("store replies", err)
		}
		stored[r.ID] = &r
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("store replies", err)
	}
	out := make([]*Request, n)
	for i, r := range in {
		if rec := stored[r.id]; rec != nil {
			out[i] = rec
			delete(stored, r.id) // a second reply in the batch is a duplicate
			s.hub.deliver(r.id, rec)
		}
	}
	return out, nil
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
	// The dead letter belongs to the project of the request it names.
	var about *[16]byte
	if id, err := uuid.Parse(in.CorrelationID); err == nil {
		b := [16]byte(id)
		about = &b
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO dead_letters (reason, source, correlation_id, message_id, headers, body, project_id)
		VALUES ($1, $2, $3, $4, $5, $6, (SELECT project_id FROM requests WHERE id = $7))`,
		reason, in.Source, in.CorrelationID, in.MessageID, h, body, about)
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

// ExpireDue marks every open request past its deadline expired (a gather
// with replies: partial, or replied for Expect-Replies: all) and wakes its
// waiters. It returns how many it closed. Several instances may run it
// at once; each request is expired exactly once.
func (s *Store) ExpireDue(ctx context.Context) (int, error) {
	return s.expire(ctx, ``)
}

func (s *Store) expire(ctx context.Context, extraWhere string, args ...any) (int, error) {
	rows, err := s.pool.Query(ctx, `
		WITH locked AS (
			SELECT id AS l_id FROM requests
			WHERE `+extraWhere+` status IN ('queued', 'pending') AND expires_at <= now()
			ORDER BY id FOR NO KEY UPDATE),
		u AS (
			-- A gather that has replies ends partial (fewer than N) or, for
			-- Expect-Replies: all, replied (failed when every reply is an
			-- error); anything without a reply expires.
			UPDATE requests SET status = CASE
				WHEN replies_expected = 1 OR replied_at IS NULL THEN 'expired'
				WHEN replies_expected > 1 THEN 'partial'
				WHEN EXISTS (SELECT 1 FROM request_replies rr WHERE rr.request_id = requests.id AND NOT rr.failed) THEN 'replied'
				ELSE 'failed' END,
			    updated_at = now()
			FROM locked
			WHERE id = l_id AND status IN ('queued', 'pending') AND expires_at <= now()
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

// FlagStalled flags the pending requests published more than after ago
// that no responder has picked up yet (no request.received event stored):
// their records say "stalled": true until one does, and each gets one
// request.stalled lifecycle event. It returns how many it flagged, at most
// 1000 a call; concurrent sweepers on other instances skip the rows it
// holds.
func (s *Store) FlagStalled(ctx context.Context, after time.Duration) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `
		WITH locked AS (
			SELECT id AS l_id FROM requests
			WHERE status = 'pending' AND picked_up_at IS NULL AND stalled_at IS NULL
			  AND published_at < now() - $1::interval
			ORDER BY id LIMIT 1000 FOR NO KEY UPDATE SKIP LOCKED),
		u AS (
			UPDATE requests SET stalled_at = now()
			FROM locked WHERE id = l_id
			RETURNING id, project_id, routing_key, status),
		e AS (
			INSERT INTO event_outbox (routing_key, body)
			SELECT 'request.stalled.' || u.routing_key,
			       switchboard_lifecycle_event(u.id, u.project_id, u.routing_key, u.status, 'stalled')
			FROM u
			WHERE coalesce(current_setting('switchboard.lifecycle_events', true), '') <> 'off'
			ORDER BY u.id)
		SELECT count(*) FROM u`, after).Scan(&n)
	if err != nil {
		return 0, dbErr("flag stalled requests", err)
	}
	return n, nil
}

// DBError wraps err with op, and marks failures to reach Postgres (as
// opposed to errors the server reported) as ErrUnavailable. Packages that
// own tables of their own use it so the API maps their errors alike.
func DBError(op string, err error) error { return dbErr(op, err) }

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

package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/groupcommit"
)

// notifyChannel carries the ids of requests that have new events, from the
// instance that stored them to every instance's live streams.
const notifyChannel = "switchboard_events"

// Outcome says what storing an event did.
type Outcome string

// Outcomes of Append.
const (
	OutcomeStored    Outcome = "stored"
	OutcomeDuplicate Outcome = "duplicate"  // the same source and id were stored before
	OutcomeUnknown   Outcome = "unknown"    // no request has the event's request id
	OutcomeOverLimit Outcome = "over_limit" // the request has as many events as are kept
)

// Stored is an event of a request's history.
type Stored struct {
	Seq       int64 // the SSE event id: increasing, exact for Last-Event-ID
	RequestID uuid.UUID
	Type      string
	Event     []byte // the CloudEvent JSON
}

// A NOTIFY payload holds at most 8000 bytes, so a batch announces its
// request ids (37 bytes each) in one notification per notifyIDs of them.
const notifyIDs = 200

// Store is the event history. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	limit   int
	logger  *slog.Logger
	appends *groupcommit.Batcher[Incoming, Outcome]

	mu       sync.Mutex
	watchers map[uuid.UUID]map[chan struct{}]struct{}
}

// NewStore returns the history over pool, keeping at most limit events per
// request.
func NewStore(pool *pgxpool.Pool, limit int, logger *slog.Logger) *Store {
	s := &Store{pool: pool, limit: limit, logger: logger, watchers: map[uuid.UUID]map[chan struct{}]struct{}{}}
	s.appends = groupcommit.New(256, 1, s.flush) // one flush at a time: see correlation's maxFlushers
	return s
}

// Append stores an event in its request's history, group-committed with
// concurrent appends, and wakes the request's live streams on every
// instance.
func (s *Store) Append(ctx context.Context, in Incoming) (Outcome, error) {
	return s.appends.Do(ctx, in)
}

func (s *Store) flush(ctx context.Context, in []Incoming) ([]Outcome, error) {
	n := len(in)
	ids := make([][16]byte, n)
	sources, eventIDs, types := make([]string, n), make([]string, n), make([]string, n)
	bodies := make([][]byte, n)
	times := make([]*time.Time, n)
	for i, e := range in {
		ids[i], sources[i], eventIDs[i], types[i], bodies[i] = e.RequestID, e.Source, e.ID, e.Type, e.Event
		if !e.Time.IsZero() {
			times[i] = &in[i].Time
		}
	}
	// The limit is checked against what was stored before this statement,
	// so a request may overshoot it by the events of one batch.
	//
	// Each request's row is locked (in id order, like every batch that
	// updates requests, so that batches cannot deadlock) before its events
	// take their seq numbers: two batches holding events of one request
	// commit one after the other, so a request's seq order is its commit
	// order, and a stream that has read up to seq N can never later see a
	// smaller one commit (which Last-Event-ID resumption relies on).
	rows, err := s.pool.Query(ctx, `
		WITH v AS (
			SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $7::timestamptz[]) WITH ORDINALITY
				AS v(request_id, source, event_id, type, event, at, ord)),
		locked AS (
			SELECT r.id AS l_id, r.status AS l_status, r.picked_up_at AS l_picked_up_at FROM requests r
			WHERE r.id IN (SELECT request_id FROM v)
			ORDER BY r.id FOR NO KEY UPDATE),
		ins AS (
			INSERT INTO request_events (request_id, source, event_id, type, event)
			SELECT v.request_id, v.source, v.event_id, v.type, v.event
			FROM v JOIN locked ON l_id = v.request_id
			WHERE (SELECT count(*) FROM request_events e WHERE e.request_id = v.request_id) < $6
			ORDER BY v.ord
			ON CONFLICT (request_id, source, event_id) DO NOTHING
			RETURNING request_id, source, event_id, type),
		received AS (
			-- When a responder started: the event's time (its own clock,
			-- kept between the request's creation and now), else now.
			SELECT ins.request_id AS r_id, min(v.at) AS r_at
			FROM ins JOIN v USING (request_id, source, event_id)
			WHERE ins.type = '`+TypeReceived+`'
			GROUP BY ins.request_id),
		pu AS (
			-- A responder started on an open request (a reply sets
			-- picked_up_at itself: a terminal record never changes).
			UPDATE requests SET picked_up_at = least(greatest(coalesce(r_at, now()), created_at), now())
			FROM locked, received
			WHERE id = l_id AND id = r_id AND l_picked_up_at IS NULL AND l_status IN ('queued', 'pending')
			RETURNING id),
		n AS (
			SELECT pg_notify('`+notifyChannel+`', string_agg(request_id::text, ','))
			FROM (SELECT request_id, (row_number() OVER () - 1) / `+fmt.Sprint(notifyIDs)+` AS g
			      FROM (SELECT DISTINCT request_id FROM ins) AS d) AS numbered
			GROUP BY g)
		SELECT request_id, source, event_id FROM ins, (SELECT count(*) FROM n) AS notified, (SELECT count(*) FROM pu) AS picked_up`,
		ids, sources, eventIDs, types, bodies, s.limit, times)
	if err != nil {
		return nil, correlation.DBError("store events", err)
	}
	type key struct {
		id            uuid.UUID
		source, event string
	}
	stored := map[key]bool{}
	var k key
	if _, err := pgx.ForEachRow(rows, []any{&k.id, &k.source, &k.event}, func() error {
		stored[k] = true
		return nil
	}); err != nil {
		return nil, correlation.DBError("store events", err)
	}
	out := make([]Outcome, n)
	var rest []int
	for i, e := range in {
		key := key{e.RequestID, e.Source, e.ID}
		if stored[key] {
			out[i] = OutcomeStored
			delete(stored, key) // a second copy in the batch is a duplicate
			continue
		}
		rest = append(rest, i)
	}
	if len(rest) > 0 {
		if err := s.classify(ctx, in, rest, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// classify says why the events at idx were not stored.
func (s *Store) classify(ctx context.Context, in []Incoming, idx []int, out []Outcome) error {
	for _, i := range idx {
		e := in[i]
		var known, dup bool
		var count int
		err := s.pool.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM requests WHERE id = $1),
			       EXISTS (SELECT 1 FROM request_events WHERE request_id = $1 AND source = $2 AND event_id = $3),
			       (SELECT count(*) FROM request_events WHERE request_id = $1)`,
			[16]byte(e.RequestID), e.Source, e.ID).Scan(&known, &dup, &count)
		if err != nil {
			return correlation.DBError("classify event", err)
		}
		switch {
		case !known:
			out[i] = OutcomeUnknown
		case dup:
			out[i] = OutcomeDuplicate
		default:
			out[i] = OutcomeOverLimit
		}
	}
	return nil
}

// AppendAndPublish stores an event posted over HTTP and queues it, in the
// same transaction, for publishing on the events exchange with routingKey
// (through the event outbox), so services and subscribers see it as if it
// had been published there.
func (s *Store) AppendAndPublish(ctx context.Context, in Incoming, routingKey string) (Stored, error) {
	var st Stored
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Lock the request first, as flush does, so that its seq order is
		// its commit order.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM requests WHERE id = $1 FOR NO KEY UPDATE`, [16]byte(in.RequestID)); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `
			INSERT INTO request_events (request_id, source, event_id, type, event)
			SELECT $1, $2, $3, $4, $5
			WHERE (SELECT count(*) FROM request_events WHERE request_id = $1) < $6
			ON CONFLICT (request_id, source, event_id) DO NOTHING
			RETURNING seq`, [16]byte(in.RequestID), in.Source, in.ID, in.Type, in.Event, s.limit).Scan(&st.Seq)
		if errors.Is(err, pgx.ErrNoRows) {
			out := make([]Outcome, 1)
			if err := s.classify(ctx, []Incoming{in}, []int{0}, out); err != nil {
				return err
			}
			return outcomeError(out[0])
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO event_outbox (routing_key, body) VALUES ($1, $2)`, routingKey, in.Event); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify('`+notifyChannel+`', $1::text)`, in.RequestID.String())
		return err
	})
	if err != nil {
		var oe *OutcomeError
		if errors.As(err, &oe) {
			return Stored{}, err
		}
		return Stored{}, correlation.DBError("store posted event", err)
	}
	st.RequestID, st.Type, st.Event = in.RequestID, in.Type, in.Event
	return st, nil
}

// OutcomeError is an event that was not stored, and why.
type OutcomeError struct{ Outcome Outcome }

func (e *OutcomeError) Error() string { return "event not stored: " + string(e.Outcome) }

func outcomeError(o Outcome) error { return &OutcomeError{Outcome: o} }

// After returns up to limit events of a request with seq above after, in
// order.
func (s *Store) After(ctx context.Context, id uuid.UUID, after int64, limit int) ([]Stored, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT seq, request_id, type, event FROM request_events
		WHERE request_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, [16]byte(id), after, limit)
	if err != nil {
		return nil, correlation.DBError("read events", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Stored, error) {
		var st Stored
		err := row.Scan(&st.Seq, &st.RequestID, &st.Type, &st.Event)
		return st, err
	})
	if err != nil {
		return nil, correlation.DBError("read events", err)
	}
	return out, nil
}

// Watch returns a channel that receives (coalesced, never blocking the
// sender) when request id may have new events, and a func to stop.
func (s *Store) Watch(id uuid.UUID) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	set := s.watchers[id]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		s.watchers[id] = set
	}
	set[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.watchers[id], ch)
		if len(s.watchers[id]) == 0 {
			delete(s.watchers, id)
		}
	}
}

// wake signals the watchers of ids; nil ids wakes every watcher.
func (s *Store) wake(ids []uuid.UUID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	signal := func(set map[chan struct{}]struct{}) {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	if ids == nil {
		for _, set := range s.watchers {
			signal(set)
		}
		return
	}
	for _, id := range ids {
		signal(s.watchers[id])
	}
}

// Listen holds a connection that LISTENs for new events stored by any
// instance and wakes the local watchers, until ctx ends. After a lost
// connection every watcher is woken, since notifications may have been
// missed.
func (s *Store) Listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.wake(nil)
		s.logger.Warn("event listener lost its connection; reconnecting", "error", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Conn().Close(context.Background()); conn.Release() }()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	s.wake(nil) // anything stored before LISTEN took effect
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var ids []uuid.UUID
		for _, part := range strings.Split(n.Payload, ",") {
			if id, err := uuid.Parse(part); err == nil {
				ids = append(ids, id)
			}
		}
		if len(ids) > 0 {
			s.wake(ids)
		}
	}
}

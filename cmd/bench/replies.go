package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-gw/switchboard/responder"
)

// echoReply is the demo echo responder's reply (cmd/switchboard echo).
type echoReply struct {
	Result  string          `json:"result"`
	Request json.RawMessage `json:"request"`
}

func echo(_ context.Context, req responder.Request) (any, error) {
	return echoReply{Result: "Everything is awesome", Request: req.Body}, nil
}

// startResponders runs n echo responders (the Go SDK, as `switchboard echo`
// does) on one queue bound to exchange for pattern, each handling up to
// concurrency requests at once. They run in the bench process, so their CPU
// is counted neither for the gateway nor for the baseline. stop ends them.
func startResponders(ctx context.Context, amqpURL, exchange, queue, pattern string, n, concurrency int) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range n {
		r, err := responder.New(responder.Config{
			AMQPURL: amqpURL, Exchange: exchange, Queue: queue, Patterns: []string{pattern},
			Prefetch: concurrency, Concurrency: concurrency, AppID: fmt.Sprintf("bench-echo-%d", i), Logger: logger,
		}, echo)
		if err != nil {
			stop()
			return nil, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(ctx) }()
		select {
		case <-r.Ready():
		case <-time.After(30 * time.Second):
			stop()
			return nil, fmt.Errorf("echo responder on %s not ready within 30s", queue)
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		}
	}
	return stop, nil
}

// publishReplies publishes one reply per id to queue the standard RabbitMQ
// way (default exchange, routing key = the queue, correlation_id = the
// request id), persistent, as fast as one confirm-mode channel allows:
// every reply is published before any confirm is awaited. It returns when
// each reply was published.
func publishReplies(ctx context.Context, conn *amqp.Connection, queue string, ids []string, payload []byte) ([]time.Time, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	body, _ := json.Marshal(echoReply{Result: "Everything is awesome", Request: payload})
	sent := make([]time.Time, len(ids))
	confirms := make([]*amqp.DeferredConfirmation, len(ids))
	for i, id := range ids {
		now := time.Now()
		sent[i] = now
		confirms[i], err = ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{
			Headers:       amqp.Table{"time": now.UnixMilli(), "status": "ok"},
			ContentType:   "application/json",
			DeliveryMode:  amqp.Persistent,
			CorrelationId: id,
			MessageId:     uuid.NewString(),
			Timestamp:     now,
			AppId:         "bench",
			Body:          body,
		})
		if err != nil {
			return nil, fmt.Errorf("publish reply: %w", err)
		}
	}
	for _, c := range confirms {
		ok, err := c.WaitContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("reply confirm: %w", err)
		}
		if !ok {
			return nil, fmt.Errorf("reply nacked")
		}
	}
	return sent, nil
}

// countStatus counts table's rows with routing key and status.
func countStatus(ctx context.Context, pool *pgxpool.Pool, table, key, status string) (int, error) {
	var n int
	err := pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE routing_key = $1 AND status = $2`, key, status).Scan(&n)
	return n, err
}

// awaitReplied polls until table holds want replied rows with routing key.
func awaitReplied(ctx context.Context, pool *pgxpool.Pool, table, key string, want int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		n, err := countStatus(ctx, pool, table, key, "replied")
		if err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d replies stored after %s", n, want, limit)
		}
		select {
		case <-time.After(25 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// replyLatencies reads when each reply was stored (replied_at, the
// storing transaction's time) and returns the time from publish to stored,
// and the last storing time.
func replyLatencies(ctx context.Context, pool *pgxpool.Pool, table string, ids []string, sent []time.Time) ([]time.Duration, time.Time, error) {
	at, err := storedTimes(ctx, pool, table, ids)
	if err != nil {
		return nil, time.Time{}, err
	}
	lats := make([]time.Duration, 0, len(ids))
	var last time.Time
	for i, id := range ids {
		t, ok := at[id]
		if !ok {
			continue
		}
		lats = append(lats, max(t.Sub(sent[i]), 0))
		if t.After(last) {
			last = t
		}
	}
	return lats, last, nil
}

// storedTimes reads replied_at of the rows of ids that have one.
func storedTimes(ctx context.Context, pool *pgxpool.Pool, table string, ids []string) (map[string]time.Time, error) {
	at := make(map[string]time.Time, len(ids))
	rows, err := pool.Query(ctx, `SELECT id::text, replied_at FROM `+table+` WHERE id = ANY($1::uuid[]) AND replied_at IS NOT NULL`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var t time.Time
		if err := rows.Scan(&id, &t); err != nil {
			return nil, err
		}
		at[id] = t
	}
	return at, rows.Err()
}

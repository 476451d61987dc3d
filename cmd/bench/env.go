package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-gw/switchboard/migrations"
)

// Routing keys. POST /bench/echo/longpoll is routing key bench.echo.longpoll
// (CONTRACT §1); the echo responders bind bench.echo.#, and the sink queue,
// which nobody consumes, binds bench.sink.# so those requests are routable
// and stay unanswered.
const (
	keyLongpoll = "bench.echo.longpoll"
	keyPrefer   = "bench.echo.prefer"
	keyIntake   = "bench.sink.intake"
	keyReplies  = "bench.sink.replies"
	keyBaseline = "bench.echo.baseline"
	keyBaseIn   = "bench.sink.baseline-intake"
	keyBaseRep  = "bench.sink.baseline-replies"
	keyScale    = "bench.sink.scale"
)

// baselineTable is the baseline's own table, created LIKE the gateway's
// requests table (same columns, defaults, checks and indexes).
const baselineTable = "baseline_requests"

// names are the bench's own database and broker names, unique per run.
type names struct {
	Suffix   string
	Database string
	Prefix   string // every exchange and queue starts with it

	Exchange, ReplyQueue, EventsExchange, DeadLetterExchange, DeadLetterQueue string // the gateway's
	EventHistoryQueue                                                         string
	EchoQueue, SinkQueue                                                      string
	BaselineExchange, BaselineReplyQueue, BaselineEchoQueue                   string
}

func newNames() names {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	s := hex.EncodeToString(b)
	p := "sbbench." + s
	return names{
		Suffix: s, Database: "sbbench_" + s, Prefix: p,
		Exchange: p + ".requests", ReplyQueue: p + ".replies", EventsExchange: p + ".events",
		DeadLetterExchange: p + ".dead-letters", DeadLetterQueue: p + ".dead-letters",
		EventHistoryQueue: p + ".event-history",
		EchoQueue:         p + ".echo", SinkQueue: p + ".sink",
		BaselineExchange: p + ".baseline.requests", BaselineReplyQueue: p + ".baseline.replies",
		BaselineEchoQueue: p + ".baseline.echo",
	}
}

func (n names) queues() []string {
	return []string{n.ReplyQueue, n.DeadLetterQueue, n.EventHistoryQueue, n.EchoQueue, n.SinkQueue, n.BaselineReplyQueue, n.BaselineEchoQueue}
}

func (n names) exchanges() []string {
	return []string{n.Exchange, n.EventsExchange, n.DeadLetterExchange, n.BaselineExchange}
}

// requireLoopback refuses a service URL whose host is not this machine:
// the bench sends its load to loopback only.
func requireLoopback(what, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s url: %w", what, err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s url %q: the bench only runs against services on loopback (127.0.0.1, ::1, localhost)", what, u.Redacted())
}

// withDatabase returns the Postgres URL base with its database replaced.
func withDatabase(base, db string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("parse postgres url: %w", err)
	}
	u.Path = "/" + db
	return u.String(), nil
}

// createDatabase creates the bench's database, migrates it to the gateway's
// schema and adds the baseline's table.
func createDatabase(ctx context.Context, adminURL string, n names) (string, error) {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect to postgres: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{n.Database}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", n.Database, err)
	}
	dbURL, err := withDatabase(adminURL, n.Database)
	if err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return dbURL, fmt.Errorf("connect to %s: %w", n.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := migrations.Up(ctx, conn); err != nil {
		return dbURL, fmt.Errorf("migrate %s: %w", n.Database, err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE "+baselineTable+" (LIKE requests INCLUDING ALL)"); err != nil {
		return dbURL, fmt.Errorf("create baseline table: %w", err)
	}
	return dbURL, nil
}

// dropDatabase removes the bench's database, closing any session still on it.
func dropDatabase(adminURL string, n names) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to drop %s: %w", n.Database, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n.Database}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", n.Database, err)
	}
	return nil
}

// declareTopology declares what the bench needs before anything runs: the
// two request exchanges (as the gateway declares its own: durable topic),
// the sink queue bound to both, and the baseline's reply queue.
func declareTopology(conn *amqp.Connection, n names, baselineQueueType string) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	for _, ex := range []string{n.Exchange, n.BaselineExchange} {
		if err := ch.ExchangeDeclare(ex, "topic", true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", ex, err)
		}
	}
	if _, err := ch.QueueDeclare(n.SinkQueue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", n.SinkQueue, err)
	}
	for _, ex := range []string{n.Exchange, n.BaselineExchange} {
		if err := ch.QueueBind(n.SinkQueue, "bench.sink.#", ex, false, nil); err != nil {
			return fmt.Errorf("bind %s: %w", n.SinkQueue, err)
		}
	}
	var args amqp.Table
	if baselineQueueType == "quorum" {
		args = amqp.Table{"x-queue-type": "quorum"}
	}
	if _, err := ch.QueueDeclare(n.BaselineReplyQueue, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare queue %s: %w", n.BaselineReplyQueue, err)
	}
	return nil
}

// purgeQueue empties a queue between modes (the sink fills up by design).
func purgeQueue(amqpURL, queue string) error {
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	_, err = ch.QueuePurge(queue, false)
	return err
}

// deleteBrokerObjects deletes every queue and exchange the run declared
// (each on its own channel: a failed delete closes its channel).
func deleteBrokerObjects(amqpURL string, n names) error {
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return fmt.Errorf("connect to delete queues: %w", err)
	}
	defer conn.Close()
	var errs []error
	for _, q := range n.queues() {
		ch, err := conn.Channel()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			errs = append(errs, fmt.Errorf("delete queue %s: %w", q, err))
		}
		_ = ch.Close()
	}
	for _, ex := range n.exchanges() {
		ch, err := conn.Channel()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := ch.ExchangeDelete(ex, false, false); err != nil {
			errs = append(errs, fmt.Errorf("delete exchange %s: %w", ex, err))
		}
		_ = ch.Close()
	}
	return errors.Join(errs...)
}

// Package testsvc gives integration tests real Postgres and RabbitMQ, each
// test isolated: its own freshly migrated database and its own exchange and
// queue names, so tests run in parallel without seeing each other's data.
//
// Services are found, in order, at SWITCHBOARD_TEST_DATABASE_URL /
// SWITCHBOARD_TEST_AMQP_URL, then on their standard local ports, then (when
// Docker is available) in containers started with testcontainers-go. Under
// CI=true a missing service fails the test; elsewhere it skips it.
package testsvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-gw/switchboard/migrations"
)

const (
	localDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	localAMQPURL     = "amqp://guest:guest@127.0.0.1:5672/"
)

var (
	pgOnce, amqpOnce sync.Once
	pgBase, amqpBase string
	pgErr, amqpErr   error
)

// unavailable fails under CI=true (integration tests never skip there) and
// skips elsewhere.
func unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true and is unavailable: %v", what, err)
	}
	t.Skipf("%s unavailable (set %s or start it locally): %v", what,
		map[string]string{"postgres": "SWITCHBOARD_TEST_DATABASE_URL", "rabbitmq": "SWITCHBOARD_TEST_AMQP_URL"}[what], err)
}

// RandomSuffix returns a short random hex string for unique names.
func RandomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func postgresBase() (string, error) {
	pgOnce.Do(func() {
		candidates := []string{localDatabaseURL}
		if env := os.Getenv("SWITCHBOARD_TEST_DATABASE_URL"); env != "" {
			candidates = []string{env}
		}
		for _, u := range candidates {
			if pgErr = pingPostgres(u); pgErr == nil {
				pgBase = u
				return
			}
		}
		if os.Getenv("SWITCHBOARD_TEST_DATABASE_URL") == "" {
			if u, err := startPostgresContainer(); err == nil {
				pgBase, pgErr = u, nil
			}
		}
	})
	return pgBase, pgErr
}

func pingPostgres(u string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// Database returns the URL of a new, migrated database that lives as long
// as t.
func Database(t testing.TB) string {
	t.Helper()
	base, err := postgresBase()
	if err != nil {
		unavailable(t, "postgres", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to postgres: %v", err)
	}
	defer admin.Close(ctx)
	name := "sbtest_" + RandomSuffix()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("drop test database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})

	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse database url: %v", err)
	}
	u.Path = "/" + name
	dbURL := u.String()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to test database: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := migrations.Up(ctx, conn); err != nil {
		t.Fatalf("migrate test database: %v", err)
	}
	return dbURL
}

// AMQPURL returns the URL of a reachable RabbitMQ.
func AMQPURL(t testing.TB) string {
	t.Helper()
	amqpOnce.Do(func() {
		candidates := []string{localAMQPURL}
		if env := os.Getenv("SWITCHBOARD_TEST_AMQP_URL"); env != "" {
			candidates = []string{env}
		}
		for _, u := range candidates {
			var conn *amqp.Connection
			conn, amqpErr = amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
			if amqpErr == nil {
				_ = conn.Close()
				amqpBase = u
				return
			}
		}
		if os.Getenv("SWITCHBOARD_TEST_AMQP_URL") == "" {
			if u, err := startRabbitContainer(); err == nil {
				amqpBase, amqpErr = u, nil
			}
		}
	})
	if amqpErr != nil {
		unavailable(t, "rabbitmq", amqpErr)
	}
	return amqpBase
}

// Names are a test's own broker names.
type Names struct {
	Exchange           string // request exchange
	ReplyQueue         string // the gateway's reply queue
	EventsExchange     string // lifecycle events exchange
	DeadLetterExchange string // where the reply queue dead-letters to
	DeadLetterQueue    string // the gateway's dead-letter queue
	EventHistoryQueue  string // the gateway's event-history queue
	Prefix             string // prefix for any other queue the test declares
}

// BrokerNames returns broker names unique to t, and deletes what was
// declared under them when t ends.
func BrokerNames(t testing.TB) Names {
	t.Helper()
	url := AMQPURL(t)
	p := "sbtest." + RandomSuffix()
	n := Names{Exchange: p + ".requests", ReplyQueue: p + ".replies", EventsExchange: p + ".events",
		DeadLetterExchange: p + ".dead-letters", DeadLetterQueue: p + ".dead-letters",
		EventHistoryQueue: p + ".event-history", Prefix: p}
	t.Cleanup(func() { deleteUnder(t, url, n) })
	return n
}

// deleteUnder removes the test's exchange and queues. Queues the test
// declared beyond the reply queue are named by Prefix and registered with
// TrackQueue.
func deleteUnder(t testing.TB, url string, n Names) {
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Logf("cleanup broker: %v", err)
		return
	}
	defer conn.Close()
	trackedMu.Lock()
	queues := append([]string{n.ReplyQueue, n.DeadLetterQueue, n.EventHistoryQueue}, tracked[n.Prefix]...)
	delete(tracked, n.Prefix)
	trackedMu.Unlock()
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		_, _ = ch.QueueDelete(q, false, false, false)
		_ = ch.Close()
	}
	for _, ex := range []string{n.Exchange, n.EventsExchange, n.DeadLetterExchange} {
		if ch, err := conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(ex, false, false)
			_ = ch.Close()
		}
	}
}

var (
	trackedMu sync.Mutex
	tracked   = map[string][]string{}
)

// Queue returns a queue name under the test's prefix, deleted when t ends.
func (n Names) Queue(name string) string {
	q := n.Prefix + "." + name
	trackedMu.Lock()
	tracked[n.Prefix] = append(tracked[n.Prefix], q)
	trackedMu.Unlock()
	return q
}

// FreeAddr returns a loopback address with a port nobody listens on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// WithHost returns rawURL with its host:port replaced by addr.
func WithHost(t testing.TB, rawURL, addr string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("parse %q: %v", rawURL, err)
	}
	u.Host = addr
	return u.String()
}

// HostOf returns the host:port of rawURL, with the scheme's default port.
func HostOf(t testing.TB, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("parse %q: %v", rawURL, err)
	}
	if u.Port() != "" {
		return u.Host
	}
	port := map[string]string{"postgres": "5432", "postgresql": "5432", "amqp": "5672", "amqps": "5671"}[strings.ToLower(u.Scheme)]
	return fmt.Sprintf("%s:%s", u.Hostname(), port)
}

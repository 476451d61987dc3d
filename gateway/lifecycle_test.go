package gateway_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/gateway"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// Reconnecting must not leak: after several cut connections and a shutdown,
// no goroutine of the gateway (publisher, consumers, relay, sweeper,
// listener, amqp091-go readers) is left behind. Not parallel, so that the
// goroutine count is this test's alone.
func TestReconnectsAndShutdownLeakNoGoroutines(t *testing.T) {
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	proxy := testsvc.NewProxy(t, testsvc.HostOf(t, amqpURL))
	defer proxy.Close()
	pool, err := pgxpool.New(context.Background(), dbURL)
	require.NoError(t, err)
	defer pool.Close()
	logger := slog.New(slog.DiscardHandler)
	store := correlation.NewStore(pool, logger)
	cfg := gateway.DefaultConfig()
	cfg.AMQPURL = testsvc.WithHost(t, amqpURL, proxy.Addr())
	cfg.RequestExchange, cfg.ReplyQueue = names.Exchange, names.ReplyQueue
	cfg.EventsExchange, cfg.DeadLetterExchange, cfg.DeadLetterQueue = names.EventsExchange, names.DeadLetterExchange, names.DeadLetterQueue
	cfg.ReconnectMin, cfg.ReconnectMax = 20*time.Millisecond, 200*time.Millisecond
	cfg.SweepInterval, cfg.RelayInterval = 50*time.Millisecond, 50*time.Millisecond
	gw, err := gateway.New(cfg, store, nil, logger)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gw.Run(ctx) }()
	go func() { defer wg.Done(); _ = store.Listen(ctx, nil) }()

	for round := range 4 {
		require.Eventually(t, gw.Connected, 10*time.Second, 5*time.Millisecond, "round %d: never reconnected", round)
		// Publishing works on the new session (unroutable is an answer from the broker).
		r, _, err := gw.Submit(ctx, correlation.NewRequest{ID: uuid.New(), RoutingKey: "nobody.home",
			Time: time.Now().UnixMilli(), ExpiresAt: time.Now().Add(time.Minute), Body: []byte(`{}`)})
		require.NoError(t, err)
		require.Equal(t, correlation.StatusUnroutable, r.Status, "round %d", round)
		proxy.Cut()
		require.Eventually(t, func() bool { return !gw.Connected() }, 10*time.Second, 5*time.Millisecond)
		proxy.Restore()
	}
	require.Eventually(t, gw.Connected, 10*time.Second, 5*time.Millisecond)
	cancel()
	wg.Wait()
	proxy.Close()
	pool.Close()
}

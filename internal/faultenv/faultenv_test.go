//go:build faults

package faultenv_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/faultenv"
)

func TestRabbitRestartKeepsDurableQueues(t *testing.T) {
	r := faultenv.StartRabbit(t)
	require.NotEqual(t, 5672, r.Port, "never the shared node")

	out, err := r.Ctl("status")
	require.NoError(t, err, out)
	require.Contains(t, out, r.Node)
	require.NotContains(t, out, "rabbitmq_management", "no plugins, so no listener on 15672")

	publish := func(body string) {
		conn, err := amqp.Dial(r.URL())
		require.NoError(t, err)
		defer conn.Close()
		ch, err := conn.Channel()
		require.NoError(t, err)
		_, err = ch.QueueDeclare("faultenv.durable", true, false, false, false, nil)
		require.NoError(t, err)
		require.NoError(t, ch.Confirm(false))
		c, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", "faultenv.durable", false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
		require.NoError(t, err)
		require.True(t, c.Wait())
	}
	count := func() int {
		conn, err := amqp.Dial(r.URL())
		require.NoError(t, err)
		defer conn.Close()
		ch, err := conn.Channel()
		require.NoError(t, err)
		q, err := ch.QueueDeclarePassive("faultenv.durable", true, false, false, false, nil)
		require.NoError(t, err)
		return q.Messages
	}

	publish("one")
	r.Stop(t)
	require.False(t, r.Running())
	_, err = amqp.Dial(r.URL())
	require.Error(t, err, "stopped means stopped")
	r.Start(t)
	require.Equal(t, 1, count(), "a clean restart keeps durable queues and persistent messages")

	publish("two")
	r.Kill(t)
	r.Start(t)
	require.Equal(t, 2, count(), "a confirmed persistent message survives SIGKILL")
	t.Logf("rabbit start-up times: %v", r.Startups())
}

func TestPostgresImmediateRestartKeepsCommits(t *testing.T) {
	p := faultenv.StartPostgres(t)
	require.NotEqual(t, 5432, p.Port, "never the shared server")
	dbURL := p.Database(t)
	ctx := context.Background()

	exec := func(sql string) {
		conn, err := pgx.Connect(ctx, dbURL)
		require.NoError(t, err)
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		require.NoError(t, err)
	}
	count := func() int {
		conn, err := pgx.Connect(ctx, dbURL)
		require.NoError(t, err)
		defer conn.Close(ctx)
		var n int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&n))
		return n
	}
	var fsync string
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	require.NoError(t, conn.QueryRow(ctx, `SHOW fsync`).Scan(&fsync))
	held := conn // a session open across the crash
	require.Equal(t, "on", fsync)

	exec(`INSERT INTO dead_letters (reason, source, body) VALUES ('test', 'faultenv', '\x00')`)
	p.Stop(t, "immediate")
	require.False(t, p.Running())
	_, err = held.Exec(ctx, `SELECT 1`)
	require.Error(t, err, "sessions die with the server")
	_ = held.Close(ctx)
	p.Start(t)
	require.Equal(t, 1, count(), "a committed row survives an immediate shutdown")
	log, err := os.ReadFile(p.Dir + "/postgres.log")
	require.NoError(t, err)
	require.True(t, strings.Contains(string(log), "not properly shut down") || strings.Contains(string(log), "automatic recovery"),
		"the restart ran crash recovery:\n%s", log)

	exec(`INSERT INTO dead_letters (reason, source, body) VALUES ('test', 'faultenv', '\x01')`)
	p.Stop(t, "fast")
	p.Start(t)
	require.Equal(t, 2, count())
	t.Logf("postgres start-up times: %v", p.Startups())
}

func TestSwitchboardProcessKillAndRestart(t *testing.T) {
	bin, err := faultenv.BuildSwitchboard(t.TempDir(), false)
	require.NoError(t, err)
	p := faultenv.StartPostgres(t)
	r := faultenv.StartRabbit(t)
	env := []string{
		"SWITCHBOARD_DATABASE_URL=" + p.Database(t),
		"SWITCHBOARD_AMQP_URL=" + r.URL(),
		"SWITCHBOARD_REQUEST_EXCHANGE=faultenv.requests",
		"SWITCHBOARD_REPLY_QUEUE=faultenv.replies",
	}
	gw := faultenv.StartServe(t, bin, "gateway", env)
	gw.WaitLog(t, "broker connected", 1, 30*time.Second)
	addr := gw.Addr
	gw.Kill(t)
	require.False(t, gw.Running())
	gw.Start(t)
	require.Equal(t, addr, gw.Addr, "a restart keeps the address")
	gw.WaitLog(t, "broker connected", 2, 30*time.Second)
	echo := faultenv.StartEcho(t, bin, "echo", []string{
		"SWITCHBOARD_AMQP_URL=" + r.URL(), "SWITCHBOARD_REQUEST_EXCHANGE=faultenv.requests", "SWITCHBOARD_ECHO_QUEUE=faultenv.echo",
	}, "workflow.#")
	echo.Stop(t, 10*time.Second)
	gw.Stop(t, 10*time.Second)
}

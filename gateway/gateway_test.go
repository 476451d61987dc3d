package gateway

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
)

func TestRelayBackoff(t *testing.T) {
	t.Parallel()
	want := []time.Duration{time.Second, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	for i, w := range want {
		require.Equal(t, w, relayBackoff(i), "attempt %d", i)
	}
	require.Equal(t, time.Minute, relayBackoff(1000))
}

func TestRequestMessage(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1_000_000)
	r := correlation.Request{
		ID: uuid.MustParse("61934db2-f9d7-47e2-be80-9706615aae06"), RoutingKey: "workflow.create",
		Time: 1552959300136, ExpiresAt: now.Add(1500 * time.Millisecond), Body: []byte(`{"a":1}`),
	}
	m := requestMessage(r, "replies", "switchboard", now)
	require.Equal(t, "61934db2-f9d7-47e2-be80-9706615aae06", m.MessageId)
	require.Equal(t, "1500", m.Expiration)
	require.Equal(t, int64(1552959300136), m.Headers["time"])
	require.Equal(t, r.ExpiresAt.UnixMilli(), m.Headers["expires_at"])
	require.Equal(t, "workflow.create", m.Type)
	require.Equal(t, "replies", m.ReplyTo)
	require.Equal(t, amqp.Persistent, m.DeliveryMode)
	require.Equal(t, "application/json", m.ContentType)

	// Already past its deadline: the broker still gets a valid, tiny TTL.
	m = requestMessage(r, "replies", "switchboard", now.Add(time.Hour))
	require.Equal(t, "1", m.Expiration)
}

func TestReplyFromDelivery(t *testing.T) {
	t.Parallel()
	d := amqp.Delivery{CorrelationId: "c", MessageId: "m", Body: []byte(`{"ok":true}`),
		Headers: amqp.Table{"time": int64(42), "status": "ERROR"}}
	in := replyFromDelivery(d, 1<<20)
	require.Equal(t, int64(42), in.Time)
	require.True(t, in.Failed, "status is matched without regard to case")
	require.Equal(t, "amqp", in.Source)
	require.JSONEq(t, `{"ok":true}`, string(in.Body))

	d = amqp.Delivery{Timestamp: time.Unix(1553020348, 0), Body: []byte(`[1]`)}
	in = replyFromDelivery(d, 1<<20)
	require.Equal(t, int64(1553020348000), in.Time, "falls back to the timestamp property")
	require.False(t, in.Failed)

	d = amqp.Delivery{Body: []byte("not json")}
	in = replyFromDelivery(d, 1<<20)
	require.True(t, in.Failed)
	var body map[string]string
	require.NoError(t, json.Unmarshal(in.Body, &body))
	require.Equal(t, "invalid_reply", body["error"])
	require.Equal(t, "not json", body["raw"])
}

func TestHeaderInt(t *testing.T) {
	t.Parallel()
	for _, v := range []any{int64(7), int32(7), int(7), int16(7), int8(7), uint32(7), uint16(7), uint8(7), float64(7), float32(7), float64(7.9), "7", " 7 ", "+7"} {
		n, ok := headerInt(v)
		require.True(t, ok, "%T", v)
		require.Equal(t, int64(7), n, "%T", v)
	}
	for _, v := range []any{nil, "x", true, []byte("7"), "7abc", "7 8", "", math.NaN(), math.Inf(1), math.Inf(-1), 1e300, -1e300} {
		_, ok := headerInt(v)
		require.False(t, ok, "%T", v)
	}
}

// A return recorded before its ack makes the publish unroutable; an ack
// with no return is a success; a nack is a refusal.
func TestPublisherResolve(t *testing.T) {
	t.Parallel()
	p := newPublisher(time.Second, NewMetrics(nil), nil)
	p.pending = map[uint64]*pendingPublish{}
	p.returned = map[string]int{}
	mk := func(tag uint64, id string) chan error {
		pp := &pendingPublish{messageID: id, done: make(chan error, 1)}
		p.pending[tag] = pp
		return pp.done
	}
	routed, returned, nacked := mk(1, "a"), mk(2, "b"), mk(3, "c")
	p.returned["b"]++
	p.resolve(amqp.Confirmation{DeliveryTag: 1, Ack: true})
	p.resolve(amqp.Confirmation{DeliveryTag: 2, Ack: true})
	p.resolve(amqp.Confirmation{DeliveryTag: 3, Ack: false})
	require.NoError(t, <-routed)
	require.ErrorIs(t, <-returned, ErrUnroutable)
	require.ErrorIs(t, <-nacked, ErrNacked)
	require.Empty(t, p.pending)
	require.Empty(t, p.returned, "a matched return is forgotten")
	// A confirm for a tag nobody waits on (timed out) is harmless.
	p.resolve(amqp.Confirmation{DeliveryTag: 9, Ack: true})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, DefaultConfig().Validate())
	bad := []func(*Config){
		func(c *Config) { c.AMQPURL = "" },
		func(c *Config) { c.RequestExchange = "" },
		func(c *Config) { c.ReplyQueue = "" },
		func(c *Config) { c.Prefetch = 0 },
		func(c *Config) { c.ConfirmTimeout = 0 },
		func(c *Config) { c.ReconnectMax = c.ReconnectMin / 2 },
	}
	for i, mutate := range bad {
		c := DefaultConfig()
		mutate(&c)
		require.Error(t, c.Validate(), "case %d", i)
	}
}

package rules

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestUDPSource(t *testing.T) {
	t.Parallel()
	src := NewUDPSource("legacy", UDPSource{Address: "127.0.0.1:0"}, testLogger(t))
	got := make(chan Event, 10)
	runSource(t, src, func(_ context.Context, ev Event) error {
		if ev.Type == "fail" {
			return errors.New("postgres away")
		}
		got <- ev
		return nil
	})
	waitReady(t, src.Ready())
	conn, err := net.Dial("udp", src.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	send := func(s string) {
		_, err := conn.Write([]byte(s))
		require.NoError(t, err)
	}

	send(`{"specversion":"1.0","id":"ce-1","source":"cbe","type":"file-generated","data":{"file":"a"}}`)
	ev := nextEvent(t, got, 5*time.Second)
	require.Equal(t, "ce-1", ev.ID)
	require.Equal(t, "cbe", ev.Source)
	require.Equal(t, "file-generated", ev.Type)
	require.JSONEq(t, `{"file":"a"}`, string(ev.Data))

	send(`{"type":"file-generated","file":"b"}`)
	ev = nextEvent(t, got, 5*time.Second)
	require.Equal(t, "legacy", ev.Type, "plain JSON: the type is the source's name")
	require.Equal(t, "udp:legacy", ev.Source)
	require.Equal(t, conn.LocalAddr().String(), ev.Subject)
	require.JSONEq(t, `{"type":"file-generated","file":"b"}`, string(ev.Data))
	first := ev.ID

	send("FILE READY /data/c")
	ev = nextEvent(t, got, 5*time.Second)
	require.JSONEq(t, `"FILE READY /data/c"`, string(ev.Data))
	require.NotEqual(t, first, ev.ID, "every datagram is a new event")

	send(`{"specversion":"1.0","id":"ce-2","source":"cbe","type":"fail"}`)
	require.Eventually(t, func() bool { return src.Stats().Failed == 1 }, 10*time.Second, 20*time.Millisecond)
	require.EqualValues(t, 4, src.Stats().Received)
	require.Zero(t, src.Stats().Dropped)
}

func TestUDPSourceAddressInUse(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	src := NewUDPSource("legacy", UDPSource{Address: pc.LocalAddr().String()}, testLogger(t))
	require.Error(t, src.Run(context.Background(), func(context.Context, Event) error { return nil }))
}

package main

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The listener holds at most n connections; the next is accepted only when
// one of them closes, and closing twice frees one slot, not two. open counts
// the accepted connections, not the Accept waiting for the next one.
func TestLimitListener(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := newLimitListener(inner, 2)
	defer ln.Close()

	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	first := <-accepted
	// The accept loop is now waiting for a second client, holding a slot.
	require.Eventually(t, func() bool { return len(ln.sem) == 2 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 1, ln.open())
	dial()
	dial()
	<-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted over the limit of 2")
	case <-time.After(100 * time.Millisecond):
	}
	require.Equal(t, 2, ln.open())
	require.NoError(t, first.Close())
	_ = first.Close()
	var third net.Conn
	select {
	case third = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting connection was not accepted after one closed")
	}
	require.Equal(t, 2, ln.open())
	require.NoError(t, third.Close())
	require.Equal(t, 1, ln.open())
}

func TestDefaultMaxConnectionsLeavesAReserve(t *testing.T) {
	t.Parallel()
	n := defaultMaxConnections()
	require.GreaterOrEqual(t, n, 64)
}

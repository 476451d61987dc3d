package main

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// fdReserve is how many file descriptors the connection limit leaves for
// everything that is not a client: the Postgres pool and listener, the
// broker connection, log files, health checks.
const fdReserve = 256

// defaultMaxConnections derives the client connection limit from the
// process's open-file limit, so that client connections can never take the
// descriptors a Postgres or broker reconnect needs.
func defaultMaxConnections() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 1 << 20
	}
	return max(64, int(lim.Cur)-fdReserve)
}

// limitListener accepts at most n connections at once. At the limit, Accept
// waits for a connection to close; new clients wait in the kernel's accept
// queue instead of failing with "too many open files", and the gateway's own
// connections keep their descriptors.
type limitListener struct {
	net.Listener
	sem chan struct{}
	// conns counts the accepted connections still open. It is not len(sem):
	// an Accept waiting for the next client already holds its slot.
	conns atomic.Int64
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	l.conns.Add(1)
	return &limitConn{Conn: c, release: func() { l.conns.Add(-1); <-l.sem }}, nil
}

// open reports how many accepted connections are open.
func (l *limitListener) open() int { return int(l.conns.Load()) }

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

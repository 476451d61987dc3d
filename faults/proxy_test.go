//go:build faults

package faults

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// latencyProxy forwards TCP connections on loopback to target, delaying
// what the client sends (up) and what target sends back (down) by fixed
// latencies, in order. Put between a gateway and the broker, a down latency
// makes the publisher confirms reach that gateway late while another
// gateway with a direct connection sees replies at once; an up latency
// keeps the gateway's publishes in flight, and what is still in flight when
// one side goes away is dropped, as a network would.
type latencyProxy struct {
	ln       net.Listener
	target   string
	up, down time.Duration

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newLatencyProxy(t testing.TB, target string, up, down time.Duration) *latencyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("latency proxy: %v", err)
	}
	p := &latencyProxy{ln: ln, target: target, up: up, down: down, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *latencyProxy) addr() string { return p.ln.Addr().String() }

func (p *latencyProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *latencyProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); p.delayed(up, c, p.up); p.drop(c, up) }()
		go func() { defer p.wg.Done(); p.delayed(c, up, p.down); p.drop(c, up) }()
	}
}

func (p *latencyProxy) drop(a, b net.Conn) {
	_ = a.Close()
	_ = b.Close()
	p.mu.Lock()
	delete(p.conns, a)
	delete(p.conns, b)
	p.mu.Unlock()
}

// delayed copies src to dst, each chunk latency after it was read. When
// src fails or ends, what is still in flight is dropped.
func (p *latencyProxy) delayed(dst, src net.Conn, latency time.Duration) {
	if latency <= 0 {
		_, _ = io.Copy(dst, src)
		return
	}
	type chunk struct {
		at   time.Time
		data []byte
	}
	chunks := make(chan chunk, 4096)
	gone := make(chan struct{})
	go func() {
		defer close(chunks)
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{time.Now(), append([]byte(nil), buf[:n]...)}
			}
			if err != nil {
				close(gone)
				return
			}
		}
	}()
	for c := range chunks {
		select {
		case <-time.After(time.Until(c.at.Add(latency))):
		case <-gone:
		}
		select {
		case <-gone:
			for range chunks { // dropped in flight
			}
			return
		default:
		}
		if _, err := dst.Write(c.data); err != nil {
			_ = src.Close()
			for range chunks { // let the reader finish
			}
			return
		}
	}
}

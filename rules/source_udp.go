package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// MaxDatagram is the largest datagram a UDP source reads; a larger one is
// dropped (and counted), never truncated into a different event.
const MaxDatagram = 64 << 10

// udpQueue bounds the datagrams waiting for the engine; beyond it they are
// dropped and counted, as the kernel would drop them anyway.
const udpQueue = 1024

// UDPListener is a UDP source: one datagram is one event. A datagram that
// is a structured-mode CloudEvent is taken as it is; any other JSON is the
// data of an event whose type is the source's name (a type field inside the
// JSON stays in the data, where a condition can test event.data.type); any
// other text is the data as a JSON string. The id is a new UUID, the source
// udp:<name>, the subject the sender's address.
//
// UDP is at most once: there is no acknowledgement to withhold, so an event
// the engine cannot decide (Postgres away) is retried in memory for a short
// while and then dropped, logged and counted, and so is every datagram that
// arrives while the queue towards the engine is full.
type UDPListener struct {
	name   string
	cfg    UDPSource
	logger *slog.Logger

	received, dropped, failed atomic.Int64

	mu   sync.Mutex
	addr net.Addr

	readyOnce sync.Once
	ready     chan struct{}
}

// UDPStats counts what a UDP source did with its datagrams.
type UDPStats struct {
	Received int64 `json:"received"`
	Dropped  int64 `json:"dropped"` // oversized, or the queue was full
	Failed   int64 `json:"failed"`  // the engine could not take them
}

// NewUDPSource returns the UDP source name. Nothing listens until Run.
func NewUDPSource(name string, cfg UDPSource, logger *slog.Logger) *UDPListener {
	return &UDPListener{name: name, cfg: cfg, logger: logger.With("rule_source", name), ready: make(chan struct{})}
}

// Name is the source's name in the rule files.
func (s *UDPListener) Name() string { return s.name }

// Ready is closed once the socket is bound.
func (s *UDPListener) Ready() <-chan struct{} { return s.ready }

// Addr is the bound address (useful with port 0), nil before Ready.
func (s *UDPListener) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Stats returns the source's counters.
func (s *UDPListener) Stats() UDPStats {
	return UDPStats{Received: s.received.Load(), Dropped: s.dropped.Load(), Failed: s.failed.Load()}
}

type datagram struct {
	from string
	body []byte
}

// Run reads datagrams until ctx ends.
func (s *UDPListener) Run(ctx context.Context, h Handler) error {
	var lc net.ListenConfig
	conn, err := lc.ListenPacket(ctx, "udp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("listen udp %s: %w", s.cfg.Address, err)
	}
	defer conn.Close()
	s.mu.Lock()
	s.addr = conn.LocalAddr()
	s.mu.Unlock()
	s.readyOnce.Do(func() { close(s.ready) })
	s.logger.Info("rule source listening", "address", conn.LocalAddr().String())

	queue := make(chan datagram, udpQueue)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.deliver(ctx, h, queue) }()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	defer func() { close(queue); wg.Wait() }()

	buf := make([]byte, MaxDatagram+1)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read udp %s: %w", s.cfg.Address, err)
		}
		s.received.Add(1)
		if n > MaxDatagram {
			s.dropped.Add(1)
			s.logger.Warn("datagram too large; dropped", "from", from.String(), "limit", MaxDatagram)
			continue
		}
		select {
		case queue <- datagram{from: from.String(), body: append([]byte(nil), buf[:n]...)}:
		default:
			s.dropped.Add(1)
			s.logger.Warn("rule engine behind; datagram dropped", "from", from.String())
		}
	}
}

// deliver hands each datagram's event to h. An engine that cannot decide
// gets a few attempts over about a second, then the event is dropped:
// holding it longer would only drop newer datagrams instead.
func (s *UDPListener) deliver(ctx context.Context, h Handler, queue <-chan datagram) {
	work := context.WithoutCancel(ctx)
	for d := range queue {
		if ctx.Err() != nil {
			s.failed.Add(1)
			continue
		}
		ev := eventFromBody(d.body, Event{ID: uuid.NewString(), Source: "udp:" + s.name, Type: s.name,
			Time: time.Now().UTC(), Subject: d.from})
		var err error
		wait := 100 * time.Millisecond
		for attempt := 0; attempt < 4; attempt++ {
			if err = h(work, ev); err == nil {
				break
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			wait *= 2
		}
		if err != nil {
			s.failed.Add(1)
			s.logger.Error("rule engine could not take the datagram; dropped (UDP is at most once)",
				"error", err, "event_id", ev.ID, "from", d.from)
		}
	}
}

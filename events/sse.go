package events

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Errors of the SSE writer.
var (
	// ErrNoFlush means the response writer (and whatever it wraps) cannot
	// flush, so events would sit in a buffer instead of reaching the client.
	ErrNoFlush = errors.New("the response writer cannot flush: server-sent events need http.Flusher")
	// ErrInvalidField means an id or event name that the event-stream
	// format cannot carry (a line break, or NUL in an id).
	ErrInvalidField = errors.New("invalid server-sent event field")
)

// DefaultSSEWriteTimeout is the SSEWriter's WriteTimeout unless changed.
const DefaultSSEWriteTimeout = 10 * time.Second

// SSEWriter writes a text/event-stream response (WHATWG HTML, "Server-sent
// events"), flushing after every event so it reaches the client at once.
// Its methods may be called from several goroutines, e.g. a heartbeat
// ticker and the event loop.
type SSEWriter struct {
	// WriteTimeout bounds each write, so a client that stops reading
	// releases its handler instead of holding it until TCP gives up. Zero
	// means no bound. Set it before the first write.
	WriteTimeout time.Duration

	mu  sync.Mutex
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf []byte
}

// NewSSEWriter starts an event stream on w: it sends status 200 with
// Content-Type text/event-stream, Cache-Control no-store and
// X-Accel-Buffering no (so nginx does not buffer the stream). w may wrap
// another writer (through an Unwrap method, as http.ResponseController
// expects) as long as one of them can flush; otherwise NewSSEWriter returns
// ErrNoFlush having written nothing, so the caller can still answer with
// an error.
func NewSSEWriter(w http.ResponseWriter) (*SSEWriter, error) {
	if !canFlush(w) {
		return nil, ErrNoFlush
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	s := &SSEWriter{WriteTimeout: DefaultSSEWriteTimeout, w: w, rc: http.NewResponseController(w)}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s, s.flushLocked() // the client sees the stream open before the first event
}

// canFlush walks w's Unwrap chain the way http.ResponseController does,
// looking for a writer that can flush.
func canFlush(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case http.Flusher, interface{ FlushError() error }:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// Event writes one event. id, when not empty, becomes the client's last
// event id (sent back as Last-Event-ID when it reconnects); an empty id is
// left out rather than sent, since "id:" alone would reset it. event, when
// not empty, is the event type (the client's default is "message"). data
// is split at its line breaks (CRLF, LF or CR) into one data line each, as
// the format requires; the client joins them back with LF.
func (s *SSEWriter) Event(id, event string, data []byte) error {
	if strings.ContainsAny(id, "\r\n\x00") {
		return fmt.Errorf("%w: id %q contains a line break or NUL", ErrInvalidField, id)
	}
	if strings.ContainsAny(event, "\r\n") {
		return fmt.Errorf("%w: event %q contains a line break", ErrInvalidField, event)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buf[:0]
	if id != "" {
		b = append(append(append(b, "id: "...), id...), '\n')
	}
	if event != "" {
		b = append(append(append(b, "event: "...), event...), '\n')
	}
	b = appendLines(b, "data: ", data)
	b = append(b, '\n') // the blank line that dispatches the event
	s.buf = b
	return s.writeLocked(b)
}

// Comment writes a comment line, which clients ignore: a heartbeat that
// keeps proxies from closing an idle stream and reveals a client that has
// gone away. Line breaks in text start new comment lines.
func (s *SSEWriter) Comment(text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := appendLines(s.buf[:0], ": ", []byte(text))
	s.buf = b
	return s.writeLocked(b)
}

// Retry tells the client how long to wait before reconnecting after the
// stream ends, in whole milliseconds.
func (s *SSEWriter) Retry(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%w: retry %v is negative", ErrInvalidField, d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := strconv.AppendInt(append(s.buf[:0], "retry: "...), d.Milliseconds(), 10)
	b = append(b, '\n')
	s.buf = b
	return s.writeLocked(b)
}

// appendLines appends one prefix-led line per line of text, splitting at
// CRLF, LF and CR: all three end a line in an event stream, so any of them
// left inside a field would cut it short.
func appendLines(b []byte, prefix string, text []byte) []byte {
	for {
		i := 0
		for i < len(text) && text[i] != '\n' && text[i] != '\r' {
			i++
		}
		b = append(append(append(b, prefix...), text[:i]...), '\n')
		if i == len(text) {
			return b
		}
		if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
			i++
		}
		text = text[i+1:]
	}
}

func (s *SSEWriter) writeLocked(b []byte) error {
	if s.WriteTimeout > 0 {
		// Not every writer supports deadlines (httptest's recorder does
		// not); without one the write is merely unbounded.
		if err := s.rc.SetWriteDeadline(time.Now().Add(s.WriteTimeout)); err == nil {
			// Cleared after, or a deadline passed while the stream was idle
			// would fail the server's own final write.
			defer func() { _ = s.rc.SetWriteDeadline(time.Time{}) }()
		}
	}
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("write event stream: %w", err)
	}
	return s.flushLocked()
}

func (s *SSEWriter) flushLocked() error {
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("flush event stream: %w", err)
	}
	return nil
}

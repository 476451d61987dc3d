package events

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sseEvent is an event as a client dispatches it.
type sseEvent struct {
	id, typ, data string
}

// sseStream is what a client makes of a stream.
type sseStream struct {
	events   []sseEvent
	comments []string
	retry    int // milliseconds; -1 when never set
}

// parseSSE interprets a stream the way the WHATWG HTML specification's
// "Interpreting an event stream" tells a client to. It is written from the
// specification, not from SSEWriter, so that the two check each other.
func parseSSE(t *testing.T, r io.Reader) sseStream {
	t.Helper()
	raw, err := io.ReadAll(r)
	require.NoError(t, err)
	text := strings.TrimPrefix(string(raw), "\uFEFF")
	// Lines end with CRLF, LF or CR.
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	out := sseStream{retry: -1}
	var data, typ, lastID strings.Builder
	lines := strings.Split(text, "\n")
	lines = lines[:len(lines)-1] // an incomplete last line is discarded
	for _, line := range lines {
		if line == "" { // dispatch
			if data.Len() == 0 {
				typ.Reset()
				continue
			}
			d := strings.TrimSuffix(data.String(), "\n")
			e := sseEvent{id: lastID.String(), typ: typ.String(), data: d}
			if e.typ == "" {
				e.typ = "message"
			}
			out.events = append(out.events, e)
			data.Reset()
			typ.Reset()
			continue
		}
		if strings.HasPrefix(line, ":") {
			out.comments = append(out.comments, strings.TrimPrefix(line[1:], " "))
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			typ.Reset()
			typ.WriteString(value)
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
		case "id":
			if !strings.Contains(value, "\x00") {
				lastID.Reset()
				lastID.WriteString(value)
			}
		case "retry":
			if n, err := strconv.Atoi(value); err == nil && strings.Trim(value, "0123456789") == "" {
				out.retry = n
			}
		}
	}
	return out
}

func TestSSEWriterFormat(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	s, err := NewSSEWriter(rec)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "text/event-stream", rec.Header().Get("Content-Type"))
	require.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
	require.Equal(t, "no", rec.Header().Get("X-Accel-Buffering"))
	require.Empty(t, rec.Header().Get("Connection"))
	require.True(t, rec.Flushed)

	require.NoError(t, s.Retry(2500*time.Millisecond))
	require.NoError(t, s.Event("1", "progress", []byte(`{"state":"running","progress":0.4}`)))
	require.NoError(t, s.Comment("heartbeat"))
	require.NoError(t, s.Event("2", "", []byte("line one\nline two\r\nline three\rline four")))
	require.NoError(t, s.Event("", "reply", []byte("trailing newline\n")))
	require.NoError(t, s.Event("4", "empty", nil))
	require.NoError(t, s.Event("5", "", []byte(" leading space, and data: that looks like a field")))
	require.NoError(t, s.Event("6", "", []byte("\n\n")))
	require.NoError(t, s.Comment("two\nlines"))

	out := parseSSE(t, rec.Body)
	require.Equal(t, 2500, out.retry)
	require.Equal(t, []string{"heartbeat", "two", "lines"}, out.comments)
	require.Equal(t, []sseEvent{
		{id: "1", typ: "progress", data: `{"state":"running","progress":0.4}`},
		{id: "2", typ: "message", data: "line one\nline two\nline three\nline four"},
		{id: "2", typ: "reply", data: "trailing newline\n"}, // no id: the last one stands
		{id: "4", typ: "empty", data: ""},
		{id: "5", typ: "message", data: " leading space, and data: that looks like a field"},
		{id: "6", typ: "message", data: "\n\n"},
	}, out.events)
}

func TestSSEWriterRefusesBrokenFields(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	s, err := NewSSEWriter(rec)
	require.NoError(t, err)
	written := rec.Body.Len()
	for _, c := range []struct{ id, event string }{
		{"a\nb", ""}, {"a\rb", ""}, {"a\x00b", ""}, {"1", "a\nb"}, {"1", "progress\r"},
	} {
		require.ErrorIs(t, s.Event(c.id, c.event, []byte("x")), ErrInvalidField, "%q %q", c.id, c.event)
	}
	require.ErrorIs(t, s.Retry(-time.Second), ErrInvalidField)
	require.Equal(t, written, rec.Body.Len(), "nothing of a refused event is written")
}

// plainWriter is a ResponseWriter that cannot flush.
type plainWriter struct {
	header http.Header
	status int
}

func (w *plainWriter) Header() http.Header         { return w.header }
func (w *plainWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *plainWriter) WriteHeader(status int)      { w.status = status }

// wrapper is a middleware's writer that exposes what it wraps.
type wrapper struct{ http.ResponseWriter }

func (w wrapper) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func TestSSEWriterNeedsFlush(t *testing.T) {
	t.Parallel()
	w := &plainWriter{header: http.Header{}}
	_, err := NewSSEWriter(w)
	require.ErrorIs(t, err, ErrNoFlush)
	require.Zero(t, w.status, "nothing written, so the caller can still answer with an error")
	require.Empty(t, w.header)

	_, err = NewSSEWriter(wrapper{w})
	require.ErrorIs(t, err, ErrNoFlush)

	rec := httptest.NewRecorder()
	s, err := NewSSEWriter(wrapper{wrapper{rec}})
	require.NoError(t, err, "a wrapped writer that can flush will do")
	require.NoError(t, s.Event("1", "", []byte("x")))
	require.True(t, rec.Flushed)
}

// TestSSEWriterStreams reads events over a real connection while the
// handler is still running: each must be flushed as it is written.
func TestSSEWriterStreams(t *testing.T) {
	t.Parallel()
	next := make(chan string)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := NewSSEWriter(wrapper{w})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for {
			select {
			case data, ok := <-next:
				if !ok {
					return
				}
				if err := s.Event(data, "", []byte(data)); err != nil {
					return
				}
			case <-r.Context().Done():
				return
			}
		}
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the stream opens before any event")
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))

	lines := bufio.NewScanner(resp.Body)
	for _, data := range []string{"one", "two", "three"} {
		next <- data
		var got []string
		for lines.Scan() && lines.Text() != "" {
			got = append(got, lines.Text())
		}
		require.Equal(t, []string{"id: " + data, "data: " + data}, got)
	}
	close(next)
	require.False(t, lines.Scan(), "the stream ends with the handler")
	require.NoError(t, lines.Err())
}

// TestSSEWriterWriteTimeout shows a client that stops reading frees its
// handler: the write fails once the deadline passes.
func TestSSEWriterWriteTimeout(t *testing.T) {
	t.Parallel()
	result := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s, err := NewSSEWriter(w)
		if err != nil {
			result <- err
			return
		}
		s.WriteTimeout = 200 * time.Millisecond
		chunk := []byte(strings.Repeat("x", 64<<10))
		for {
			if err := s.Event("", "", chunk); err != nil {
				result <- err
				return
			}
		}
	}))
	t.Cleanup(srv.Close)

	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close() // never read
	select {
	case err := <-result:
		require.Error(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("a write to a client that does not read never timed out")
	}
}

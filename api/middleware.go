package api

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
)

type ctxKey int

const logFieldsKey ctxKey = iota

// logFields lets a handler add the request id to the access-log line.
type logFields struct{ requestID uuid.UUID }

func setRequestID(ctx context.Context, id uuid.UUID) {
	if f, ok := ctx.Value(logFieldsKey).(*logFields); ok {
		f.requestID = id
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		fields := &logFields{}
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), logFieldsKey, fields)))
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", rec.status,
			"duration_ms", time.Since(start).Milliseconds()}
		if fields.requestID != uuid.Nil {
			attrs = append(attrs, "request_id", fields.requestID)
		}
		level := slog.LevelDebug
		if rec.status >= 500 {
			level = slog.LevelWarn
		}
		s.logger.Log(r.Context(), level, "http", attrs...)
	})
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.ErrorContext(r.Context(), "handler panic", "panic", v, "path", r.URL.Path, "stack", string(debug.Stack()))
				writeError(w, nil)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// writeDeadline bounds how long writing an answer may take, so a client
// that stops reading cannot hold a handler and its connection for ever.
// An answer may first wait (long-poll, Prefer: wait) up to MaxWait, so the
// deadline is MaxWait plus WriteTimeout from now; Server-Sent Events streams
// are exempt, and bound each of their writes instead.
func (s *Server) writeDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !wantsEventStream(r) {
			// Not every writer supports deadlines (httptest recorders): then
			// the server's own timeouts are all there is.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.MaxWait + s.cfg.WriteTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

package api

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
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

// observe is the one middleware around every call, outermost. It
//
//   - traces the call: a server span, child of the client's W3C traceparent
//     when it sent one (else a new trace), in the request's context, so the
//     submit records it, the publish continues it and every log line
//     written with the context carries its trace id; the span is named by
//     method and chi route pattern once routing is done, never by the raw
//     path (paths hold ids, patterns do not);
//   - counts and times the call by route, method and status (Metrics);
//   - recovers a handler's panic as a 500, which is what is counted, traced
//     and logged;
//   - bounds how long writing the answer may take, so a client that stops
//     reading cannot hold a handler and its connection for ever: an answer
//     may first wait (long-poll, Prefer: wait) up to MaxWait, so the
//     deadline is MaxWait plus WriteTimeout from now; Server-Sent Events
//     streams are exempt, and bound each of their writes instead;
//   - writes the access-log line.
//
// It is one function, with one response recorder and one request copy, on
// purpose: every layer of middleware is a stack frame each parked
// long-poll keeps, and five layers took a waiter's goroutine stack from 8 to
// 16 KiB (BENCHMARKS.md, long-poll scale).
func (s *Server) observe(next http.Handler) http.Handler {
	tp := s.tracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	tracer := tp.Tracer(tracerName)
	var propagator propagation.TraceContext
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx := propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method)))
		defer span.End()
		rc := chi.RouteContext(ctx) // the top router's: its patterns are whole
		fields := &logFields{}
		rec := &statusRecorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(ctx, logFieldsKey, fields))
		if !wantsEventStream(r) {
			// Not every writer supports deadlines (httptest recorders): then
			// the server's own timeouts are all there is.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.MaxWait + s.cfg.WriteTimeout))
		}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.ErrorContext(r.Context(), "handler panic", "panic", v, "path", r.URL.Path, "stack", string(debug.Stack()))
				writeError(rec, nil)
			}
			s.observed(r, rec, rc, span, fields, start)
		}()
		next.ServeHTTP(rec, r)
	})
}

// observed records a call observe saw answered: its span's name and
// status, its metrics and its access-log line.
func (s *Server) observed(r *http.Request, rec *statusRecorder, rc *chi.Context, span trace.Span, fields *logFields, start time.Time) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http answers 200
	}
	var routes chi.Routes
	if rc != nil {
		routes = rc.Routes
		if pattern := rc.RoutePattern(); pattern != "" {
			span.SetName(r.Method + " " + pattern)
			span.SetAttributes(attribute.String("http.route", pattern))
		}
	}
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(status))
	}
	elapsed := time.Since(start)
	if m := s.instruments; m != nil {
		route, method := routeLabel(routes, r), methodLabel(r.Method)
		m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
		m.duration.WithLabelValues(route, method).Observe(elapsed.Seconds())
	}
	attrs := []any{"method", r.Method, "path", r.URL.Path, "status", rec.status, "duration_ms", elapsed.Milliseconds()}
	if fields.requestID != uuid.Nil {
		attrs = append(attrs, "request_id", fields.requestID)
	}
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelWarn
	}
	s.logger.Log(r.Context(), level, "http", attrs...)
}

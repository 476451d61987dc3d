package api

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// tracerName names the API's spans' instrumentation scope.
const tracerName = "github.com/switchboard-gw/switchboard/api"

// SetTracerProvider makes the server trace every request with tp: a
// server span per request, child of the client's W3C traceparent when it
// sent one. Call it before Handler. Without it no spans are recorded, but
// a client's traceparent is still carried on to what the request causes.
func (s *Server) SetTracerProvider(tp trace.TracerProvider) { s.tracerProvider = tp }

// traceRequests starts the server span of each request from the incoming
// traceparent and tracestate headers (or a new trace) and puts it in the
// request's context, so the submit records it, the publish continues it
// and every log line written with the context carries its trace id. The
// span is named by method and chi route pattern once routing is done,
// never by the raw path: paths hold ids, patterns do not.
func (s *Server) traceRequests(next http.Handler) http.Handler {
	tp := s.tracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	tracer := tp.Tracer(tracerName)
	var propagator propagation.TraceContext
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method)))
		defer span.End()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(ctx))

		if rc := chi.RouteContext(ctx); rc != nil {
			if pattern := rc.RoutePattern(); pattern != "" {
				span.SetName(r.Method + " " + pattern)
				span.SetAttributes(attribute.String("http.route", pattern))
			}
		}
		status := rec.status
		if status == 0 {
			status = http.StatusOK // nothing written: net/http answers 200
		}
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, strconv.Itoa(status))
		}
	})
}

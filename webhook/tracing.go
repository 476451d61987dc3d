package webhook

import (
	"context"
	"net/url"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/switchboard-gw/switchboard/correlation"
)

// tracerName names the dispatcher's spans' instrumentation scope.
const tracerName = "github.com/switchboard-gw/switchboard/webhook"

// traceContext is the propagator on the wire: the W3C traceparent and
// tracestate headers.
var traceContext propagation.TraceContext

// SetTracerProvider makes the dispatcher trace every attempt with tp, as a
// client span in the trace of the request the delivery is about. Call it
// before Run. Without it no spans are recorded, but each attempt still
// sends the request's traceparent.
func (d *Dispatcher) SetTracerProvider(tp trace.TracerProvider) { d.tracer = tp.Tracer(tracerName) }

// startAttemptSpan starts the client span of one attempt at del: a child of
// the span that submitted the request (kept with its record), or a new
// trace when it was submitted outside any.
func (d *Dispatcher) startAttemptSpan(ctx context.Context, del Delivery, rec correlation.Request) (context.Context, trace.Span) {
	tracer := d.tracer
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer(tracerName)
	}
	if rec.TraceParent != "" {
		ctx = traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": rec.TraceParent, "tracestate": rec.TraceState})
	}
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", "POST"),
		attribute.Int("http.request.resend_count", del.Attempts),
		attribute.String("switchboard.webhook.event_type", del.EventType),
	}
	// The host only: a webhook URL's path and query may hold a token.
	if u, err := url.Parse(del.URL); err == nil {
		attrs = append(attrs, attribute.String("server.address", u.Hostname()))
	}
	return tracer.Start(ctx, "POST webhook", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endAttemptSpan records the attempt's outcome on its span and ends it.
func endAttemptSpan(span trace.Span, res result) {
	if res.attempt.HTTPStatus != nil {
		span.SetAttributes(attribute.Int("http.response.status_code", *res.attempt.HTTPStatus))
	}
	span.SetAttributes(attribute.String("switchboard.webhook.outcome", res.attempt.Outcome))
	if res.state != StateDelivered {
		span.SetStatus(codes.Error, res.attempt.Error)
	}
	span.End()
}

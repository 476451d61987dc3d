package gateway

import (
	"context"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/amqpheader"
)

// tracerName names the gateway's spans' instrumentation scope.
const tracerName = "github.com/switchboard-gw/switchboard/gateway"

// traceContext is the only propagator on the wire: W3C Trace Context, in
// the AMQP headers traceparent and tracestate.
var traceContext propagation.TraceContext

// SetTracerProvider makes the gateway trace with tp: a producer span for
// every request it publishes, a consumer span for every reply it stores.
// Call it before Run. Without it spans are not recorded, but the trace
// context a request was submitted in still travels with it.
func (g *Gateway) SetTracerProvider(tp trace.TracerProvider) {
	g.tracer = tp.Tracer(tracerName)
	g.replies.tracer = g.tracer
}

// defaultTracer records nothing and carries on the context it is given.
func defaultTracer() trace.Tracer { return noop.NewTracerProvider().Tracer(tracerName) }

// submitTrace returns the W3C trace context of the span in ctx, to be kept
// with a new request (empty when ctx carries none).
func submitTrace(ctx context.Context) (traceparent, tracestate string) {
	c := propagation.MapCarrier{}
	traceContext.Inject(ctx, c)
	return c["traceparent"], c["tracestate"]
}

// requestContext returns ctx carrying the trace context kept with r (the
// submit's span, as a remote parent), or ctx itself when r has none.
func requestContext(ctx context.Context, r correlation.Request) context.Context {
	if r.TraceParent == "" {
		return ctx
	}
	return traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": r.TraceParent, "tracestate": r.TraceState})
}

// publishRequest publishes r under a producer span, child of the span that
// submitted it — whether the submitter publishes it at once or the relay,
// on any instance, later — and sends the producer span's context in the
// message headers for the responder to continue.
func (g *Gateway) publishRequest(ctx context.Context, r correlation.Request, now time.Time) error {
	ctx, span := g.tracer.Start(requestContext(ctx, r), "publish "+r.RoutingKey,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "rabbitmq"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", g.cfg.RequestExchange),
			attribute.String("messaging.rabbitmq.destination.routing_key", r.RoutingKey),
			attribute.String("messaging.message.id", r.ID.String()),
		))
	defer span.End()
	msg := requestMessage(r, g.cfg.ReplyQueue, g.cfg.AppID, now)
	traceContext.Inject(ctx, amqpheader.Carrier(msg.Headers))
	err := g.publisher.Publish(ctx, g.cfg.RequestExchange, r.RoutingKey, true, msg)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// linkToRequest links the span in ctx (the one storing a reply) to the
// span that submitted r, when the reply did not carry r's trace itself (a
// responder that sends no traceparent): the reply's trace then starts on
// its own, and the link joins the two.
func linkToRequest(ctx context.Context, r correlation.Request) {
	span := trace.SpanFromContext(ctx)
	submit := trace.SpanContextFromContext(requestContext(context.Background(), r))
	if !span.IsRecording() || !submit.IsValid() || span.SpanContext().TraceID() == submit.TraceID() {
		return
	}
	span.AddLink(trace.Link{SpanContext: submit, Attributes: []attribute.KeyValue{
		attribute.String("switchboard.link", "request"),
	}})
}

// startReplySpan starts the consumer span of a reply taken from the reply
// queue: a child of the trace context the responder sent with it (the
// responder SDK sends its handler's span), or a new trace when it sent none.
func startReplySpan(ctx context.Context, tracer trace.Tracer, queue string, d amqp.Delivery) (context.Context, trace.Span) {
	return tracer.Start(traceContext.Extract(ctx, amqpheader.Carrier(d.Headers)), "process "+queue,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "rabbitmq"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", queue),
			attribute.String("messaging.message.id", d.MessageId),
			attribute.String("messaging.message.conversation_id", d.CorrelationId),
		))
}

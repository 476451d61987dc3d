package responder

import (
	"context"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-gw/switchboard/internal/amqpheader"
)

// tracerName names the responder's spans' instrumentation scope.
const tracerName = "github.com/switchboard-gw/switchboard/responder"

// traceContext is the propagator on the wire, whatever the service set as
// its global one: W3C Trace Context, in the AMQP headers traceparent and
// tracestate, as the gateway sends and reads them.
var traceContext propagation.TraceContext

// tracer returns the tracer of the configured provider, or of the global
// one (otel.SetTracerProvider) when none is configured.
func (c *Config) tracer() trace.Tracer {
	tp := c.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(tracerName)
}

// startHandlerSpan starts the consumer span of a request: a child of the
// trace context in its headers (the gateway's publish span), or a new
// trace when there is none. Even with no tracer provider set up, the
// request's trace context is carried on to the reply and the events.
func startHandlerSpan(ctx context.Context, tracer trace.Tracer, d amqp.Delivery) (context.Context, trace.Span) {
	return tracer.Start(traceContext.Extract(ctx, amqpheader.Carrier(d.Headers)), "process "+d.RoutingKey,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "rabbitmq"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", d.Exchange),
			attribute.String("messaging.rabbitmq.destination.routing_key", d.RoutingKey),
			attribute.String("messaging.message.id", d.MessageId),
		))
}

// injectTrace writes the trace context of ctx's span into headers.
func injectTrace(ctx context.Context, headers amqp.Table) {
	traceContext.Inject(ctx, amqpheader.Carrier(headers))
}

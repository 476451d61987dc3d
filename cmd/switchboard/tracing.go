package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/switchboard-gw/switchboard/api"
	"github.com/switchboard-gw/switchboard/gateway"
	"github.com/switchboard-gw/switchboard/webhook"
)

// defaultServiceName is service.name when OTEL_SERVICE_NAME (or
// service.name in OTEL_RESOURCE_ATTRIBUTES) does not say otherwise.
const defaultServiceName = "switchboard"

// tracing is the gateway's tracer provider and, when spans are exported,
// its OTLP exporter.
type tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil: OTEL_SDK_DISABLED
	exporter sdktrace.SpanExporter    // nil: export is off
}

// exportTraces decides from the standard OTEL_* variables whether spans are
// exported. Export is off unless OTEL_TRACES_EXPORTER is otlp, or it is
// unset and an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: nothing leaves the host until
// an operator says where to. Only OTLP over HTTP is built in.
func exportTraces(getenv func(string) string) (bool, error) {
	exporter := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	switch exporter {
	case "otlp":
	case "none":
		return false, nil
	case "":
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return false, nil
		}
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: only otlp (or none) is supported", exporter)
	}
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if protocol != "" && protocol != "http/protobuf" {
		return false, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: only http/protobuf is supported", protocol)
	}
	return true, nil
}

// startTracing sets up tracing from the OTEL_* variables (see
// exportTraces). With export off the provider is still the SDK's, with no
// exporter: spans get ids, so a request without a traceparent starts a
// trace, log lines carry its id, and the traceparent flows end to end to
// responders that may export even if the gateway does not.
// OTEL_SDK_DISABLED=true turns spans off altogether; incoming trace
// context is then still carried on. The propagator is always W3C Trace
// Context: each package uses it directly, not a global.
func startTracing(ctx context.Context, getenv func(string) string, logger *slog.Logger) (*tracing, error) {
	export, err := exportTraces(getenv)
	if err != nil {
		return nil, err
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		logger.Info("tracing: OTEL_SDK_DISABLED; trace context is propagated, no spans are made")
		return &tracing{provider: noop.NewTracerProvider()}, nil
	}
	t := &tracing{}
	var opts []sdktrace.TracerProviderOption
	if export {
		// otlptracehttp reads OTEL_EXPORTER_OTLP_* (endpoint, headers,
		// TLS, timeout) itself; creating it sends nothing.
		if t.exporter, err = otlptracehttp.New(ctx); err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		res, err := resource.New(ctx,
			resource.WithAttributes(attribute.String("service.name", defaultServiceName)),
			resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: they win
			resource.WithTelemetrySDK())
		if err != nil && !errors.Is(err, resource.ErrPartialResource) {
			return nil, fmt.Errorf("trace resource: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(t.exporter), sdktrace.WithResource(res))
		// Export failures (a collector away) go to our log, not to the
		// SDK's default logger; the gateway carries on without them.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { logger.Warn("tracing: export", "error", err) }))
	}
	t.sdk = sdktrace.NewTracerProvider(opts...)
	t.provider = t.sdk
	// OTEL_EXPORTER_OTLP_HEADERS, which may hold credentials, is not logged.
	attrs := []any{"export", export}
	if export {
		attrs = append(attrs, "endpoint", maskURL(firstNonEmpty(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
			getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "http://localhost:4318")),
			"service_name", firstNonEmpty(getenv("OTEL_SERVICE_NAME"), defaultServiceName))
	}
	logger.Info("tracing", attrs...)
	return t, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// attach makes the gateway, the API and the webhook dispatcher (nil: off)
// trace with t.
func (t *tracing) attach(gw *gateway.Gateway, srv *api.Server, dispatcher *webhook.Dispatcher) {
	gw.SetTracerProvider(t.provider)
	srv.SetTracerProvider(t.provider)
	if dispatcher != nil {
		dispatcher.SetTracerProvider(t.provider)
	}
}

// shutdown flushes the spans not yet exported, for at most five seconds;
// call it once the work that makes spans has stopped.
func (t *tracing) shutdown(logger *slog.Logger) {
	if t.sdk == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.sdk.Shutdown(ctx); err != nil {
		logger.Warn("tracing: flush spans at shutdown", "error", err)
	}
}

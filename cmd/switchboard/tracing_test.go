package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
)

func TestExportTraces(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		env    map[string]string
		export bool
		err    string
	}{
		{name: "nothing set: off", env: nil},
		{name: "otlp", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, export: true},
		{name: "an endpoint alone", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, export: true},
		{name: "a traces endpoint alone", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, export: true},
		{name: "none wins over an endpoint", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}},
		{name: "http/protobuf", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, export: true},
		{name: "grpc is not built in", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, err: "only http/protobuf"},
		{name: "other exporters are not built in", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: "only otlp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			export, err := exportTraces(func(k string) string { return tc.env[k] })
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.export, export)
		})
	}
}

// With no OTEL_* variables there is no exporter — nothing is ever sent —
// but spans still get ids: an incoming traceparent is continued and
// carried on, and a request without one starts a trace.
func TestTracingOffStillPropagates(t *testing.T) {
	t.Parallel()
	tr, err := startTracing(context.Background(), func(string) string { return "" }, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer tr.shutdown(slog.New(slog.DiscardHandler))
	require.Nil(t, tr.exporter, "export is off: no exporter is created")

	const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var tc propagation.TraceContext
	ctx := tc.Extract(context.Background(), propagation.MapCarrier{"traceparent": incoming})
	ctx, span := tr.provider.Tracer("test").Start(ctx, "submit")
	out := propagation.MapCarrier{}
	tc.Inject(ctx, out)
	span.End()
	parts := strings.Split(out["traceparent"], "-")
	require.Len(t, parts, 4)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", parts[1], "the client's trace goes on")
	require.NotEqual(t, "00f067aa0ba902b7", parts[2], "as a child span of the client's")
	require.Equal(t, "01", parts[3])

	_, root := tr.provider.Tracer("test").Start(context.Background(), "submit")
	defer root.End()
	require.True(t, root.SpanContext().IsValid(), "a request without a traceparent starts a trace")
}

// OTEL_SDK_DISABLED makes no spans, and still carries the incoming trace
// context on unchanged.
func TestTracingDisabledStillPropagates(t *testing.T) {
	t.Parallel()
	tr, err := startTracing(context.Background(), func(k string) string {
		return map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}[k]
	}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Nil(t, tr.exporter)

	const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var tc propagation.TraceContext
	ctx := tc.Extract(context.Background(), propagation.MapCarrier{"traceparent": incoming})
	ctx, span := tr.provider.Tracer("test").Start(ctx, "submit")
	defer span.End()
	out := propagation.MapCarrier{}
	tc.Inject(ctx, out)
	require.Equal(t, incoming, out["traceparent"])
}

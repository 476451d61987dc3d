package tracelog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-gw/switchboard/internal/tracelog"
)

func TestHandlerAddsTraceIDsFromTheContext(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(tracelog.NewHandler(slog.NewJSONHandler(&buf, nil))).With("request_id", "r1")
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})

	logger.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "with a span")
	logger.InfoContext(context.Background(), "without")

	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	require.Len(t, lines, 2)
	var with, without map[string]any
	require.NoError(t, json.Unmarshal(lines[0], &with))
	require.NoError(t, json.Unmarshal(lines[1], &without))
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", with["trace_id"])
	require.Equal(t, "00f067aa0ba902b7", with["span_id"])
	require.Equal(t, "r1", with["request_id"])
	require.NotContains(t, without, "trace_id")
	require.NotContains(t, without, "span_id")
}

// Package tracelog puts the trace on log lines: a slog.Handler that adds
// trace_id and span_id to every record logged with a context that carries
// an OpenTelemetry span (the *Context logging calls), so a log line about a
// request can be found from its trace and the other way round.
package tracelog

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Handler wraps another slog.Handler; see the package comment.
type Handler struct{ inner slog.Handler }

// NewHandler returns inner with trace ids added from the context.
func NewHandler(inner slog.Handler) *Handler { return &Handler{inner: inner} }

// Enabled reports whether inner handles records at level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// Handle adds trace_id and span_id when ctx carries a valid span context,
// then hands the record to inner.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone() // the caller's record may be shared with other handlers
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.inner.Handle(ctx, r)
}

// WithAttrs returns the wrapper around inner.WithAttrs(attrs).
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{inner: h.inner.WithAttrs(attrs)}
}

// WithGroup returns the wrapper around inner.WithGroup(name): the trace ids
// of its records go into the group too.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name)}
}

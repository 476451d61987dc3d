package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/gateway"
	"github.com/switchboard-gw/switchboard/internal/tracelog"
	"github.com/switchboard-gw/switchboard/responder"
	"github.com/switchboard-gw/switchboard/webhook"
)

// The client's span, as a W3C traceparent: trace id and span id.
const (
	clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID  = "00f067aa0ba902b7"
	clientParent  = "00-" + clientTraceID + "-" + clientSpanID + "-01"
)

// recorder is an in-memory tracer provider and what it recorded.
type recorder struct {
	*tracetest.SpanRecorder
	tp *sdktrace.TracerProvider
}

func newRecorder(t *testing.T) recorder {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return recorder{SpanRecorder: rec, tp: tp}
}

// span waits for the ended span named name and returns it.
func (r recorder) span(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	require.Eventually(t, func() bool {
		for _, s := range r.Ended() {
			if s.Name() == name {
				found = s
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "no span %q", name)
	return found
}

// tracedResponder runs a responder SDK service that traces with tp.
func (b *bundle) tracedResponder(t *testing.T, queue string, tp trace.TracerProvider, h responder.Handler, patterns ...string) {
	t.Helper()
	b.responderWith(t, responder.Config{Queue: queue, Patterns: patterns, TracerProvider: tp}, h)
}

// parent splits a traceparent into its trace id and span id.
func parent(t *testing.T, traceparent string) (traceID, spanID string) {
	t.Helper()
	parts := strings.Split(traceparent, "-")
	require.Len(t, parts, 4, "traceparent %q", traceparent)
	return parts[1], parts[2]
}

// A client's trace is continued by every hop: the gateway's server span,
// its publish, the responder SDK's handler (and the service's own spans in
// it, and its progress events), and the gateway's storing of the reply.
func TestTraceFollowsARequestEndToEnd(t *testing.T) {
	t.Parallel()
	gw := newRecorder(t)
	b := setup(t, options{tracing: gw.tp})
	tap, tapQ := b.bindQueue(t, "tap", "traced.#")
	evCh, evQ := b.events(t, "progress", "progress.traced.#")
	svc := newRecorder(t) // the responder is another service, with its own provider
	b.tracedResponder(t, "svc", svc.tp, func(ctx context.Context, req responder.Request) (any, error) {
		ctx, span := trace.SpanFromContext(ctx).TracerProvider().Tracer("svc").Start(ctx, "calibrate")
		defer span.End()
		if err := responder.Progress(ctx, 0.5, "half way"); err != nil {
			return nil, err
		}
		return map[string]any{"calibrated": true}, nil
	}, "traced.#")

	res := b.do(t, "POST", "/traced/run",
		with(jsonCT, "traceparent", clientParent, "tracestate", "vendor=abc", "Prefer", "wait=10"), `{"n": 1}`)
	require.Equal(t, 200, res.status, "body: %s", res.body)
	require.Equal(t, "replied", res.json(t)["status"])
	id := res.header.Get("Message-ID")

	server := gw.span(t, "POST /*") // the route pattern, not /traced/run
	publish := gw.span(t, "publish traced.run")
	reply := gw.span(t, "process "+b.names.ReplyQueue)
	handler := svc.span(t, "process traced.run")
	calibrate := svc.span(t, "calibrate")
	for _, s := range []sdktrace.ReadOnlySpan{server, publish, reply, handler, calibrate} {
		require.Equal(t, clientTraceID, s.SpanContext().TraceID().String(), "span %s", s.Name())
	}
	require.Equal(t, trace.SpanKindServer, server.SpanKind())
	require.Equal(t, clientSpanID, server.Parent().SpanID().String(), "the server span's parent is the client's span")
	require.True(t, server.Parent().IsRemote())
	require.Equal(t, trace.SpanKindProducer, publish.SpanKind())
	require.Equal(t, server.SpanContext().SpanID(), publish.Parent().SpanID(), "the publish is a child of the submit")
	require.Equal(t, trace.SpanKindConsumer, handler.SpanKind())
	require.Equal(t, publish.SpanContext().SpanID(), handler.Parent().SpanID(), "the responder continues the publish")
	require.Equal(t, handler.SpanContext().SpanID(), calibrate.Parent().SpanID(), "the service's own spans nest in the handler's")
	require.Equal(t, trace.SpanKindConsumer, reply.SpanKind())
	require.Equal(t, handler.SpanContext().SpanID(), reply.Parent().SpanID(), "the reply span is a child of the responder's")

	// On the wire: the request message carries the publish span, and the
	// client's tracestate.
	msg := getOne(t, tap, tapQ)
	require.Equal(t, id, msg.MessageId)
	require.Equal(t, "00-"+clientTraceID+"-"+publish.SpanContext().SpanID().String()+"-01", msg.Headers["traceparent"])
	require.Equal(t, "vendor=abc", msg.Headers["tracestate"])
	// The progress event carries the span it was published in.
	ev := getOne(t, evCh, evQ)
	traceID, spanID := parent(t, ev.Headers["traceparent"].(string))
	require.Equal(t, clientTraceID, traceID)
	require.Equal(t, calibrate.SpanContext().SpanID().String(), spanID)
	// The record keeps the submit's trace context for later publishes and webhooks.
	var kept string
	require.NoError(t, b.pool.QueryRow(context.Background(), `SELECT traceparent FROM requests WHERE id = $1`, id).Scan(&kept))
	require.Equal(t, "00-"+clientTraceID+"-"+server.SpanContext().SpanID().String()+"-01", kept)
}

// A request published by the outbox relay — later, maybe by another
// instance — is published in the trace it was submitted in.
func TestRelayedPublishContinuesTheStoredTrace(t *testing.T) {
	t.Parallel()
	gw := newRecorder(t)
	b := setup(t, options{tracing: gw.tp})
	tap, tapQ := b.bindQueue(t, "tap", "relayed.#")

	// Recorded as a submit would, but left for the relay to publish.
	now := time.Now()
	id := gateway.NewID()
	_, created, err := b.store.Create(context.Background(), correlation.NewRequest{
		ID: id, RoutingKey: "relayed.run", Time: now.UnixMilli(), ExpiresAt: now.Add(time.Minute), Body: []byte(`{}`),
		PublishAfter: now, TraceParent: clientParent, TraceState: "vendor=abc",
	})
	require.NoError(t, err)
	require.True(t, created)

	msg := getOne(t, tap, tapQ)
	require.Equal(t, id.String(), msg.MessageId)
	publish := gw.span(t, "publish relayed.run")
	require.Equal(t, clientTraceID, publish.SpanContext().TraceID().String())
	require.Equal(t, clientSpanID, publish.Parent().SpanID().String(), "the publish is a child of the stored submit span")
	require.Equal(t, "00-"+clientTraceID+"-"+publish.SpanContext().SpanID().String()+"-01", msg.Headers["traceparent"])
	require.Equal(t, "vendor=abc", msg.Headers["tracestate"])
}

// With spans recorded nowhere (no tracer provider set: what the gateway
// and the responder SDK do by default), the client's trace context still
// reaches the responder.
func TestTraceContextFlowsWithTracingOff(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	tap, tapQ := b.bindQueue(t, "tap", "untraced.#")

	res := b.do(t, "POST", "/untraced/run", with(jsonCT, "traceparent", clientParent), `{}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	msg := getOne(t, tap, tapQ)
	require.Equal(t, clientParent, msg.Headers["traceparent"], "no spans: the client's own span is the parent")
}

// A webhook delivery is a client span in the request's trace, and tells the
// receiver so with a traceparent header.
func TestWebhookCarriesTheRequestTrace(t *testing.T) {
	t.Parallel()
	gw := newRecorder(t)
	b := setup(t, options{tracing: gw.tp, webhooks: func(*webhook.Config) {}})
	b.echo(t, "echo", "hooktrace.#")
	rcv := newHookReceiver(t, http.StatusOK)

	res := b.do(t, "POST", "/hooktrace/me", with(jsonCT, "Reply-To", rcv.URL+"/cb", "traceparent", clientParent), `{}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	require.Eventually(t, func() bool { return len(rcv.calls()) == 1 }, 10*time.Second, 10*time.Millisecond)

	server := gw.span(t, "POST /*")
	attempt := gw.span(t, "POST webhook")
	require.Equal(t, trace.SpanKindClient, attempt.SpanKind())
	require.Equal(t, clientTraceID, attempt.SpanContext().TraceID().String())
	require.Equal(t, server.SpanContext().SpanID(), attempt.Parent().SpanID(), "the attempt is a child of the submit")
	traceID, spanID := parent(t, rcv.calls()[0].header.Get("traceparent"))
	require.Equal(t, clientTraceID, traceID)
	require.Equal(t, attempt.SpanContext().SpanID().String(), spanID)
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the JSON log lines written so far.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(b.buf.Bytes()), []byte("\n")) {
		var m map[string]any
		require.NoError(t, json.Unmarshal(l, &m), "log line %s", l)
		out = append(out, m)
	}
	return out
}

// The log line about a request carries its request id and its trace id:
// the client's trace, or the one the gateway started.
func TestRequestLogLinesCarryTheTraceID(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	logger := slog.New(tracelog.NewHandler(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	gw := newRecorder(t)
	b := setup(t, options{tracing: gw.tp, logger: logger})
	b.bindQueue(t, "tap", "logged.#")

	traced := b.do(t, "POST", "/logged/run", with(jsonCT, "traceparent", clientParent), `{"secret": "s3cr3t"}`)
	require.Equal(t, 202, traced.status, "body: %s", traced.body)
	untraced := b.do(t, "POST", "/logged/run", jsonCT, `{}`)
	require.Equal(t, 202, untraced.status, "body: %s", untraced.body)

	accessLine := func(id string) map[string]any {
		var found map[string]any
		require.Eventually(t, func() bool {
			for _, l := range logs.lines(t) {
				if l["msg"] == "http" && l["request_id"] == id {
					found = l
					return true
				}
			}
			return false
		}, 5*time.Second, 10*time.Millisecond, "no access log line for %s", id)
		return found
	}
	line := accessLine(traced.header.Get("Message-ID"))
	require.Equal(t, clientTraceID, line["trace_id"])
	require.Equal(t, "/logged/run", line["path"])
	line = accessLine(untraced.header.Get("Message-ID"))
	require.NotEmpty(t, line["trace_id"], "a request without a traceparent starts a trace")
	require.NotEqual(t, clientTraceID, line["trace_id"])

	require.NotContains(t, logs.String(), "s3cr3t", "request bodies are never logged")
}

// A reply from a responder that sends no traceparent starts a trace of its
// own; the gateway's span storing it links to the span that submitted the
// request, so the two traces are joined.
func TestReplyWithoutTraceIsLinkedToTheRequest(t *testing.T) {
	t.Parallel()
	gw := newRecorder(t)
	b := setup(t, options{tracing: gw.tp})
	b.bindQueue(t, "untraced", "untraced.#")

	res := b.do(t, "POST", "/untraced/run", with(jsonCT, "traceparent", clientParent), `{}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	id := res.header.Get("Message-ID")
	server := gw.span(t, "POST /*")

	b.reply(t, id, `{"ok": true}`, nil) // no traceparent header
	rec := b.do(t, "GET", "/v1/requests/"+id+"?wait=10", nil, "").json(t)
	require.Equal(t, "replied", rec["status"])

	reply := gw.span(t, "process "+b.names.ReplyQueue)
	require.NotEqual(t, clientTraceID, reply.SpanContext().TraceID().String(), "a trace of its own")
	require.Len(t, reply.Links(), 1)
	link := reply.Links()[0].SpanContext
	require.Equal(t, clientTraceID, link.TraceID().String())
	require.Equal(t, server.SpanContext().SpanID(), link.SpanID(), "linked to the submit's span")
}

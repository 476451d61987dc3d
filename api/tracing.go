package api

import "go.opentelemetry.io/otel/trace"

// tracerName names the API's spans' instrumentation scope.
const tracerName = "github.com/switchboard-gw/switchboard/api"

// SetTracerProvider makes the server trace every request with tp: a
// server span per request, child of the client's W3C traceparent when it
// sent one (see observe). Call it before Handler. Without it no spans are
// recorded, but a client's traceparent is still carried on to what the
// request causes.
func (s *Server) SetTracerProvider(tp trace.TracerProvider) { s.tracerProvider = tp }

package api

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the HTTP side's Prometheus instruments. Their labels are
// bounded: a route is a chi route pattern (or "unmatched"), never a path,
// and a method outside the standard set is "other".
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	streams  prometheus.Gauge
}

// unmatchedRoute labels calls the router has no route for, so unknown
// paths (scanners, typos) cannot grow the label set.
const unmatchedRoute = "unmatched"

// NewMetrics creates the instruments and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_http_requests_total",
			Help: `HTTP calls answered, by route (the chi route pattern; "/*" is a submit; "unmatched": no route), method and status code.`},
			[]string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "switchboard_http_request_duration_seconds",
			Help: "Time to answer HTTP calls, by route and method. Long-polls (?wait=, Prefer: wait) last up to their wait " +
				"and event streams (text/event-stream) for as long as they are open: read those routes' latency with that in mind.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}},
			[]string{"route", "method"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_event_streams",
			Help: "Open event streams of single requests (GET /v1/requests/{id}/events as text/event-stream) served by this instance."}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.streams)
	}
	return m
}

// SetMetrics counts the calls the handler answers and the event streams it
// holds; call it before Handler. Without it nothing is counted.
func (s *Server) SetMetrics(m *Metrics) { s.instruments = m }

// routeLabel is the pattern of the route the router serves r's method and
// path with, or "unmatched". It asks the router rather than reading the
// pattern the call was routed by, because a middleware (authentication,
// rate limits, CORS) may answer before routing, and because a 404 or 405
// from a subrouter carries a partial pattern ("/v1/*"). A CORS preflight
// counts under the route it asks about.
func routeLabel(routes chi.Routes, r *http.Request) string {
	if routes == nil {
		return unmatchedRoute
	}
	path := r.URL.RawPath // what chi routes by, when set
	if path == "" {
		path = r.URL.Path
	}
	method := r.Method
	if m := r.Header.Get("Access-Control-Request-Method"); method == http.MethodOptions && m != "" {
		method = m // a CORS preflight: the route it asks about
	}
	if p := routes.Find(chi.NewRouteContext(), method, path); p != "" {
		return p
	}
	return unmatchedRoute
}

// methodLabel keeps the method label to the standard methods.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

// streamOpened counts an event stream as open until the returned func is
// called.
func (s *Server) streamOpened() (closed func()) {
	if s.instruments == nil {
		return func() {}
	}
	s.instruments.streams.Inc()
	return s.instruments.streams.Dec
}

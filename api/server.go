// Package api is switchboard's HTTP face: the chi router, the submit,
// long-poll and reply handlers, problem+json errors, and the health and
// metrics endpoints. It holds no state of its own: requests are recorded and
// published by package gateway, and read from package correlation.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-gw/switchboard/correlation"
)

// Config holds the HTTP-side limits.
type Config struct {
	// MaxBodyBytes is the largest request or reply body accepted when the
	// claim check is off (no SetBlobs, or MaxBlobBytes 0).
	MaxBodyBytes int64
	// ClaimCheckBytes is the largest request or reply body kept inline when
	// the claim check is on; larger ones are stored as blobs and travel as
	// claims (CONTRACT §8). 0: MaxBodyBytes. At most MaxBodyBytes.
	ClaimCheckBytes int64
	// MaxBlobBytes is the largest body accepted by claim check; 0 turns
	// the claim check off.
	MaxBlobBytes int64
	// DefaultTimeout is a request's deadline when it sends no Request-Timeout.
	DefaultTimeout time.Duration
	// MaxTimeout is the largest Request-Timeout accepted.
	MaxTimeout time.Duration
	// MaxWait caps ?wait= and Prefer: wait=.
	MaxWait time.Duration
	// MaxJSONDepth bounds how deeply a JSON body may nest.
	MaxJSONDepth int
	// WriteTimeout bounds writing an answer, counted after any wait the
	// request asked for; event streams bound each write instead.
	WriteTimeout time.Duration
	// ExpectReplies are route-level defaults of Expect-Replies: a request
	// that sends no Expect-Replies takes the first whose pattern matches its
	// routing key (none: one reply).
	ExpectReplies []RouteExpect
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:   1 << 20,
		MaxBlobBytes:   1 << 30,
		DefaultTimeout: 60 * time.Second,
		MaxTimeout:     24 * time.Hour,
		MaxWait:        60 * time.Second,
		MaxJSONDepth:   64,
		WriteTimeout:   30 * time.Second,
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.MaxBodyBytes < 1:
		return errors.New("max body bytes must be positive")
	case c.ClaimCheckBytes < 0 || c.ClaimCheckBytes > c.MaxBodyBytes:
		return errors.New("claim check bytes must be from 0 to max body bytes")
	case c.MaxBlobBytes < 0:
		return errors.New("max blob bytes must not be negative")
	case c.DefaultTimeout < time.Second:
		return errors.New("default request timeout must be at least 1s")
	case c.MaxTimeout < c.DefaultTimeout:
		return errors.New("max request timeout must be at least the default")
	case c.MaxWait < 0:
		return errors.New("max wait must not be negative")
	case c.MaxJSONDepth < 1:
		return errors.New("max JSON depth must be at least 1")
	case c.WriteTimeout <= 0:
		return errors.New("write timeout must be positive")
	}
	for _, e := range c.ExpectReplies {
		if err := e.validate(); err != nil {
			return err
		}
	}
	return nil
}

// Gateway is what the handlers need from package gateway.
type Gateway interface {
	Submit(ctx context.Context, n correlation.NewRequest) (correlation.Request, bool, error)
	StoreReply(ctx context.Context, in correlation.IncomingReply) (correlation.Outcome, error)
	Cancel(ctx context.Context, id uuid.UUID) (correlation.Request, error)
	Ready(ctx context.Context) error
	// ReplyRead records, without waiting, that a read answered with the
	// reply of request id (the reply's receipt).
	ReplyRead(id uuid.UUID)
}

// Records is what the handlers need from the correlation store.
type Records interface {
	Get(ctx context.Context, id uuid.UUID) (correlation.Request, error)
	Wait(ctx context.Context, id uuid.UUID, timeout time.Duration) (correlation.Request, error)
	List(ctx context.Context, f correlation.Filter) ([]correlation.Request, error)
	ListDeadLetters(ctx context.Context, project *uuid.UUID, limit int, before int64) ([]correlation.DeadLetter, error)
	Owner(ctx context.Context, id uuid.UUID) (correlation.Owner, error)
	DeadLetterCount(ctx context.Context) (int, error)
	Ping(ctx context.Context) error
}

// Server is the HTTP handler set.
type Server struct {
	cfg     Config
	gw      Gateway
	records Records
	metrics http.Handler
	logger  *slog.Logger
	newID   func() uuid.UUID
	now     func() time.Time
	// webhooks is zero when webhooks are off.
	webhooks Webhooks
	// events is zero when the event endpoints are off.
	events Events
	// console serves the web console at /ui/ (nil: none).
	console http.Handler
	// cors is the CORS middleware (nil: CORS off).
	cors func(http.Handler) http.Handler
	// instruments count calls and streams (nil: not counted).
	instruments *Metrics
	// rules is the rule engine's API (nil: off).
	rules Rules
	// tracerProvider traces requests (nil: spans are not recorded).
	tracerProvider trace.TracerProvider
	// blobs keeps claim-checked bodies (nil: the claim check is off).
	blobs Blobs
	// auth is zero when every call is the insecure principal's.
	auth Auth
	// draining ends every long-poll early (answering with the record as it
	// is) so a graceful shutdown does not wait out MaxWait.
	draining context.Context
	drain    context.CancelFunc
	// stopping makes /readyz answer 503 while the instance still serves,
	// so load balancers take it out of rotation before it stops.
	stopping atomic.Bool
}

// New returns the server; metrics serves /metrics.
func New(cfg Config, gw Gateway, records Records, metrics http.Handler, newID func() uuid.UUID, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("api config: %w", err)
	}
	draining, drain := context.WithCancel(context.Background())
	return &Server{cfg: cfg, gw: gw, records: records, metrics: metrics, logger: logger, newID: newID, now: time.Now,
		draining: draining, drain: drain}, nil
}

// SetConsole serves h (the web console) at /ui/; call it before Handler.
func (s *Server) SetConsole(h http.Handler) { s.console = h }

// SetCORS lets browsers on the allowed origins call the API (see CORS);
// call it before Handler. An empty list leaves CORS off.
func (s *Server) SetCORS(allowed []string) {
	if len(allowed) > 0 {
		s.cors = CORS(allowed)
	}
}

// Stopping makes /readyz answer 503 from now on, while every call is still
// served: the first step of a graceful shutdown.
func (s *Server) Stopping() { s.stopping.Store(true) }

// Drain makes every current and future long-poll answer at once, for a
// graceful shutdown.
func (s *Server) Drain() { s.drain() }

// wait long-polls a record. It returns early, with the record as it is,
// when the server drains; it returns ctx's error when the client left.
func (s *Server) wait(ctx context.Context, id uuid.UUID, d time.Duration) (correlation.Request, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.draining, cancel)
	defer stop()
	rec, err := s.records.Wait(wctx, id, d)
	if err != nil && ctx.Err() == nil && s.draining.Err() != nil {
		return s.records.Get(ctx, id)
	}
	return rec, err
}

// Handler returns the router.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.observe) // first: every call is traced, counted and logged, also when CORS or auth answers
	if s.cors != nil {
		r.Use(s.cors)
	}
	if s.auth.Middleware != nil {
		r.Use(s.auth.Middleware)
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, errNotFound("nothing is served at "+r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		methodNotAllowed(w, r, r.Method)
	})

	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Method(http.MethodGet, "/metrics", s.metrics)

	r.Route("/v1", func(r chi.Router) {
		r.Get("/requests", s.listRequests)
		r.Get("/requests/{id}", s.getRequest)
		r.Delete("/requests/{id}", s.cancelRequest)
		r.Get("/requests/{id}/reply", s.getReply)
		r.Get("/requests/{id}/deliveries", s.listDeliveries)
		r.Post("/requests/{id}/deliveries/retry", s.retryDelivery)
		r.Get("/requests/{id}/events", s.requestEvents)
		r.Post("/requests/{id}/events", s.postEvent)
		r.Get("/events", s.topicEvents)
		r.Post("/requests/{id}/read-token", s.readToken)
		r.Group(func(r chi.Router) {
			r.Use(s.operatorOnly)
			s.rulesRoutes(r)
		})
		s.authRoutes(r)
		r.Post("/replies", s.postReply)
		r.Get("/blobs/{id}", s.getBlob)
		r.Get("/dead-letters", s.listDeadLetters)
	})

	if s.console != nil {
		r.Get("/ui", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
		})
		r.Method(http.MethodGet, "/ui/*", s.console)
	}

	// Everything else POSTed is a request for a service.
	r.Post("/*", s.submit)
	return r
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.stopping.Load() {
		p := problem(http.StatusServiceUnavailable, "not-ready", "Not ready", "shutting down")
		p.RetryAfter = 5
		writeProblem(w, p)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"postgres": "ok", "broker": "ok"}
	ready := true
	// Details of the failures go to the log, not to unauthenticated callers.
	if err := s.records.Ping(ctx); err != nil {
		checks["postgres"], ready = "unreachable", false
		s.logger.Warn("readiness: postgres", "error", err)
	}
	if err := s.gw.Ready(ctx); err != nil {
		checks["broker"], ready = "unreachable", false
		s.logger.Warn("readiness: broker", "error", err)
	}
	if !ready {
		p := problem(http.StatusServiceUnavailable, "not-ready", "Not ready",
			fmt.Sprintf("postgres: %s; broker: %s", checks["postgres"], checks["broker"]))
		p.RetryAfter = 5
		writeProblem(w, p)
		return
	}
	body := map[string]any{"status": "ready", "checks": checks}
	if n, err := s.records.DeadLetterCount(ctx); err == nil {
		body["dead_letters"] = n
	}
	writeJSON(w, http.StatusOK, body)
}

// methodNotAllowed answers 405 with the Allow header RFC 9110 asks for,
// listing the methods the router does serve at this path.
func methodNotAllowed(w http.ResponseWriter, r *http.Request, method string) {
	var allowed []string
	if rc := chi.RouteContext(r.Context()); rc != nil {
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			if m != method && rc.Routes.Match(chi.NewRouteContext(), m, r.URL.Path) {
				allowed = append(allowed, m)
			}
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
	}
	writeProblem(w, problem(http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed",
		method+" is not allowed on "+r.URL.Path))
}

package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/auth"
	"github.com/switchboard-gw/switchboard/correlation"
)

// Auth is the API's side of projects and keys (package auth): who the
// caller is, read tokens for browsers, limits, the audit trail and the
// admin routes. Without it (the handlers alone, in tests) every call is the
// insecure principal's.
type Auth struct {
	// Middleware authenticates every call but the open ones.
	Middleware func(http.Handler) http.Handler
	// Tokens mint browser read tokens; nil: none are minted.
	Tokens Tokens
	// Limiter applies the projects' rate limits and quotas; nil: none.
	Limiter Limiter
	// Audit records user actions; nil: not recorded.
	Audit auth.Auditor
	// Routes registers the admin and audit routes under /v1.
	Routes func(r chi.Router)
}

// Tokens mint read tokens (see auth.Tokens).
type Tokens interface {
	Mint(projectID, requestID uuid.UUID, now time.Time) (string, time.Time)
}

// Limiter is the rate limiter of auth.Limiter.
type Limiter interface {
	Allow(ctx context.Context, project uuid.UUID) (bool, time.Duration)
	Acquire(ctx context.Context, project uuid.UUID) (func(), bool)
}

// SetAuth turns authentication on; call it before Handler.
func (s *Server) SetAuth(a Auth) { s.auth = a }

// caller returns who makes the call.
func caller(r *http.Request) auth.Principal {
	if p, ok := auth.FromContext(r.Context()); ok {
		return p
	}
	return auth.InsecurePrincipal()
}

// errForbidden is the answer to a caller whose key lacks the scope.
func errForbidden(detail string) *Problem {
	return problem(http.StatusForbidden, "forbidden", "Forbidden", detail)
}

// errRateLimited is the answer past a project's limits.
func errRateLimited(detail string, retryAfter time.Duration) *Problem {
	p := problem(http.StatusTooManyRequests, "rate-limited", "Too many requests", detail)
	p.RetryAfter = max(1, int((retryAfter+time.Second-1)/time.Second))
	return p
}

// visible checks that the caller may read request id: it exists, belongs
// to the caller's project (or the caller is an operator), its routing key
// is within the caller's read scopes, and a read token names it. Anything
// else is 404, whatever the reason, so ids of other projects say nothing.
func (s *Server) visible(w http.ResponseWriter, r *http.Request, id uuid.UUID) (correlation.Owner, bool) {
	owner, err := s.records.Owner(r.Context(), id)
	if err == nil && !caller(r).CanRead(owner.ProjectID, id, owner.RoutingKey) {
		err = correlation.ErrNotFound
	}
	if err != nil {
		writeError(w, err)
		return correlation.Owner{}, false
	}
	return owner, true
}

// mayChange checks that the caller may act on a request it can read
// (cancel it, retry its delivery, add events): a submit scope for its
// routing key. A read token never may.
func (s *Server) mayChange(w http.ResponseWriter, r *http.Request, owner correlation.Owner) bool {
	p := caller(r)
	if p.RequestID != uuid.Nil || !p.CanSubmit(owner.RoutingKey) {
		writeProblem(w, errForbidden("this key may not change requests with routing key "+strconv.Quote(owner.RoutingKey)))
		return false
	}
	return true
}

// holdWaiter takes one of the caller's project's concurrent long-polls or
// streams; false when it has answered 429.
func (s *Server) holdWaiter(w http.ResponseWriter, r *http.Request) (func(), bool) {
	if s.auth.Limiter == nil {
		return func() {}, true
	}
	release, ok := s.auth.Limiter.Acquire(r.Context(), caller(r).ProjectID)
	if !ok {
		writeProblem(w, errRateLimited("this project holds as many long-polls and streams as it may; try again later", 5*time.Second))
		return nil, false
	}
	return release, true
}

// setReadToken gives the answer to a submit a token that reads only that
// request, for a web page's EventSource.
func (s *Server) setReadToken(w http.ResponseWriter, rec correlation.Request) {
	if s.auth.Tokens == nil {
		return
	}
	token, expires := s.auth.Tokens.Mint(rec.ProjectID, rec.ID, s.now())
	w.Header().Set("Read-Token", token)
	w.Header().Set("Read-Token-Expires", strconv.FormatInt(expires.UnixMilli(), 10))
}

// readToken handles POST /v1/requests/{id}/read-token: a token that reads
// only this request (its record, reply and events), for EventSource.
func (s *Server) readToken(w http.ResponseWriter, r *http.Request) {
	id, err := parseUUID(chi.URLParam(r, "id"))
	if err != nil {
		writeProblem(w, errNotFound("no request has this id: request ids are UUIDs"))
		return
	}
	owner, ok := s.visible(w, r, id)
	if !ok {
		return
	}
	if caller(r).RequestID != uuid.Nil {
		// A token minting its successor would renew itself for ever; its
		// short life is what bounds a leaked token.
		writeProblem(w, errForbidden("a read token cannot mint read tokens; use an API key"))
		return
	}
	if s.auth.Tokens == nil {
		writeProblem(w, errNotFound("this gateway mints no read tokens"))
		return
	}
	token, expires := s.auth.Tokens.Mint(owner.ProjectID, id, s.now())
	writeJSON(w, http.StatusOK, map[string]any{"token": token, "expires_at": expires.UnixMilli()})
}

// audit records a user action, logging (never failing the call) when it
// cannot.
func (s *Server) audit(r *http.Request, action, target, outcome string, detail map[string]any) {
	if s.auth.Audit == nil {
		return
	}
	p := caller(r)
	if err := s.auth.Audit.Record(context.WithoutCancel(r.Context()), auth.AuditEntry{
		ProjectID: p.ProjectID, KeyID: p.KeyID, Action: action, Target: target, Outcome: outcome, Detail: detail,
	}); err != nil {
		s.logger.ErrorContext(r.Context(), "record audit entry", "action", action, "target", target, "error", err)
	}
}

// operatorOnly guards the rule engine's routes: rules are the operators'
// configuration. A hook may also be posted by a key that may submit to
// hooks.<source>.
func (s *Server) operatorOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := caller(r)
		if src, ok := strings.CutPrefix(r.URL.Path, "/v1/hooks/"); ok && p.CanSubmit("hooks."+src) {
			next.ServeHTTP(w, r)
			return
		}
		if !p.Operator() {
			writeProblem(w, errForbidden("only the gateway's operators (admins of the default project) may do this"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authProblem maps the auth package's errors for writeError; nil for
// any other error.
func authProblem(err error) *Problem {
	switch {
	case errors.Is(err, auth.ErrUnauthorized):
		return problem(http.StatusUnauthorized, "unauthorized", "Unauthorized", "a valid API key is needed (Authorization: Bearer <key>)")
	}
	return nil
}

// authRoutes registers the admin and audit routes, or, without auth, the
// same paths answering 404, so the API's shape does not depend on it.
func (s *Server) authRoutes(r chi.Router) {
	if s.auth.Routes != nil {
		s.auth.Routes(r)
		return
	}
	off := func(w http.ResponseWriter, _ *http.Request) {
		writeProblem(w, errNotFound("this gateway runs without projects and keys (--insecure-no-auth)"))
	}
	r.Post("/admin/projects", off)
	r.Get("/admin/projects", off)
	r.Post("/admin/keys", off)
	r.Get("/admin/keys", off)
	r.Delete("/admin/keys/{id}", off)
	r.Get("/audit", off)
}

package auth

import (
	"errors"
	"log/slog"
	"net/http"
	"path"
	"strings"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/httpjson"
)

// TokenVerifier checks a browser read token (the access_token query
// parameter) and returns its principal: a project and the one request it
// may read (Principal.RequestID).
type TokenVerifier interface {
	Verify(token string) (Principal, error)
}

// MiddlewareConfig configures Middleware.
type MiddlewareConfig struct {
	// Store authenticates API keys.
	Store *Store
	// Tokens verifies read tokens; nil: tokens are refused.
	Tokens TokenVerifier
	// Insecure serves calls without credentials as InsecurePrincipal
	// (--insecure-no-auth), with a warning logged for each.
	Insecure bool
	// Logger (nil: discard) hears about insecure calls and failures.
	Logger *slog.Logger
	// Open lists paths served without authentication. An entry ending in
	// "/" covers everything under it ("/ui/"); any other covers that path
	// and what is under it ("/healthz", "/healthz/..."), not "/healthzx".
	Open []string
}

// insecureWarning is logged for every call served without authentication.
const insecureWarning = "--insecure-no-auth: request served without authentication"

// Middleware authenticates every call but those to open paths and CORS
// preflights, and puts its Principal in the request context. A call with
// an API key (Authorization: Bearer) is authenticated by it; else one with
// an access_token query parameter by the token; else, when Insecure, it is
// served as InsecurePrincipal; else it is answered 401. Credentials that
// are present but wrong are answered 401 even when Insecure.
//
// Neither keys nor tokens are ever logged.
func Middleware(cfg MiddlewareConfig) func(http.Handler) http.Handler {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isOpen(cfg.Open, r.URL.Path) || isPreflight(r) {
				next.ServeHTTP(w, r)
				return
			}
			p, err := authenticate(cfg, r)
			switch {
			case err == nil:
			case errors.Is(err, errNoCredentials) && cfg.Insecure:
				logger.WarnContext(r.Context(), insecureWarning, "method", r.Method, "path", r.URL.Path)
				p = InsecurePrincipal()
			case errors.Is(err, correlation.ErrUnavailable):
				logger.WarnContext(r.Context(), "authenticate: the key store is unavailable", "error", err)
				p := newProblem(http.StatusServiceUnavailable, "unavailable", "Service unavailable",
					"the gateway cannot check credentials now; try again later")
				w.Header().Set("Retry-After", "5")
				writeProblem(w, p)
				return
			default:
				var why *unauthorized
				if !errors.As(err, &why) {
					// Not the caller's fault, and not an outage: say little.
					logger.ErrorContext(r.Context(), "authenticate", "error", err)
					writeProblem(w, newProblem(http.StatusInternalServerError, "internal", "Internal error",
						"the gateway failed to check credentials"))
					return
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="switchboard"`)
				writeProblem(w, newProblem(http.StatusUnauthorized, "unauthorized", "Unauthorized", why.detail))
				return
			}
			next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
		})
	}
}

// unauthorized is a refusal the caller is told about, with what to fix.
type unauthorized struct{ detail string }

func (u *unauthorized) Error() string { return "unauthorized: " + u.detail }

var errNoCredentials = &unauthorized{"this call needs credentials: send an API key as 'Authorization: Bearer <key>'"}

// authenticate finds the caller's principal. Errors are *unauthorized, or
// the Store's or verifier's failure (never holding the credentials).
func authenticate(cfg MiddlewareConfig, r *http.Request) (Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, key, _ := strings.Cut(h, " ")
		key = strings.TrimSpace(key)
		if !strings.EqualFold(scheme, "Bearer") || key == "" {
			return Principal{}, &unauthorized{"the Authorization header must be 'Bearer <key>'"}
		}
		if cfg.Store == nil {
			return Principal{}, &unauthorized{"this gateway accepts no API keys"}
		}
		p, err := cfg.Store.Authenticate(r.Context(), key)
		if errors.Is(err, ErrUnauthorized) {
			return Principal{}, &unauthorized{"the API key is not valid: unknown, revoked or expired"}
		}
		return p, err
	}
	if r.URL.Query().Has("access_token") {
		token := r.URL.Query().Get("access_token")
		if cfg.Tokens == nil || token == "" {
			return Principal{}, &unauthorized{"the access token is not valid"}
		}
		p, err := cfg.Tokens.Verify(token)
		switch {
		case err == nil:
			return p, nil
		case errors.Is(err, correlation.ErrUnavailable):
			return Principal{}, err
		default:
			return Principal{}, &unauthorized{"the access token is not valid or has expired"}
		}
	}
	return Principal{}, errNoCredentials
}

// isOpen reports whether p is served without authentication. Only a clean
// path can be: "/ui/../v1/requests" is never open, whatever it routes to.
func isOpen(open []string, p string) bool {
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	if clean != p {
		return false
	}
	for _, o := range open {
		switch {
		case o == "":
		case strings.HasSuffix(o, "/"):
			if strings.HasPrefix(p, o) {
				return true
			}
		case p == o || strings.HasPrefix(p, o+"/"):
			return true
		}
	}
	return false
}

// isPreflight reports whether r is a CORS preflight, which browsers send
// without credentials; the CORS handler answers it.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}

// problem is an RFC 9457 problem detail, shaped as package api's.
type problem = httpjson.Problem

func newProblem(status int, kind, title, detail string) problem {
	return *httpjson.NewProblem(status, kind, title, detail)
}

func writeProblem(w http.ResponseWriter, p problem) { httpjson.WriteProblem(w, &p) }

func writeJSON(w http.ResponseWriter, status int, v any) { httpjson.WriteJSON(w, status, v) }

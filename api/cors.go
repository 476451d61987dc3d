package api

import (
	"net/http"
	"slices"
	"strings"
)

// corsExposed are the response headers a browser script may read: the ones
// CONTRACT §2 and §4 give meaning to.
const corsExposed = "Message-ID, Time, Location, Correlation-ID, Request-Status, Preference-Applied, Retry-After"

// corsMethods are the methods the API serves.
const corsMethods = "GET, POST, DELETE"

// corsMaxAge is how long, in seconds, a browser may cache a preflight.
const corsMaxAge = "600"

// corsRequestHeaders are the request headers a browser may send, lower
// case as Access-Control-Request-Headers lists them.
var corsRequestHeaders = map[string]bool{
	"content-type": true, "message-id": true, "time": true, "reply-to": true, "request-timeout": true,
	"prefer": true, "correlation-id": true, "correl-id": true, "reply-status": true, "last-event-id": true,
	"authorization": true, "traceparent": true, "tracestate": true, // the last two: W3C Trace Context
	"expect-replies": true, "reply-from": true, // scatter-gather
}

// CORS returns middleware that lets browser scripts from the allowed
// origins call the API. An origin is matched exactly, as the browser
// serializes it (scheme://host[:port], no trailing slash); "*" allows every
// origin. With an empty list CORS is off: the middleware adds nothing, so
// browsers refuse cross-origin reads.
//
// Credentials (cookies) are never allowed; callers authenticate with the
// Authorization header, which a preflight may ask for.
//
// A preflight from an origin that is not allowed is answered 403 without
// CORS headers, rather than passed on to a router that would answer it
// 405; other requests from such origins are served as usual, and the
// browser withholds the response from the script.
func CORS(allowed []string) func(http.Handler) http.Handler {
	if len(allowed) == 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	origins := make(map[string]bool, len(allowed))
	for _, o := range allowed {
		origins[o] = true
	}
	anyOrigin := origins["*"]
	// With "*" alone the answer is the same for every origin; otherwise it
	// names the origin, and caches must keep one answer per origin.
	wildcard := anyOrigin && len(origins) == 1

	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			if !wildcard {
				h.Add("Vary", "Origin") // also when refused: the answer depends on Origin
			}
			origin := r.Header.Get("Origin")
			preflight := r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != ""
			if origin == "" {
				next.ServeHTTP(w, r)
				return
			}
			if !anyOrigin && !origins[origin] {
				if preflight {
					w.WriteHeader(http.StatusForbidden)
					return
				}
				next.ServeHTTP(w, r)
				return
			}
			if wildcard {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
			}
			if !preflight {
				h.Set("Access-Control-Expose-Headers", corsExposed)
				next.ServeHTTP(w, r)
				return
			}
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", corsMethods)
			if requested, ok := allowedRequestHeaders(r.Header.Values("Access-Control-Request-Headers")); ok && requested != "" {
				h.Set("Access-Control-Allow-Headers", requested)
			}
			h.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
		})
	}
}

// allowedRequestHeaders returns the headers a preflight asks for, as a
// list to echo, and whether every one of them is allowed. When one is not,
// the preflight names none, and the browser refuses the request.
func allowedRequestHeaders(values []string) (string, bool) {
	var names []string
	for _, v := range values {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.ToLower(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			if !corsRequestHeaders[name] {
				return "", false
			}
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return strings.Join(names, ", "), true
}

//go:build pprof

package main

import (
	"net/http"
	"net/http/pprof"
	"strings"
)

// A profiling build (go build -tags pprof) serves net/http/pprof under
// /debug/pprof/ on the gateway's own HTTP address, for `make bench
// BENCHFLAGS=-cpuprofile=...`. Release builds do not include it.
func init() {
	wrapHandler = func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/debug/pprof/profile":
				pprof.Profile(w, r)
			case strings.HasPrefix(r.URL.Path, "/debug/pprof/"):
				pprof.Index(w, r)
			default:
				h.ServeHTTP(w, r)
			}
		})
	}
}

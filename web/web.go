// Package web is switchboard's operator console: a handful of static files
// (HTML, CSS and JavaScript modules) embedded in the binary and served under
// /ui/. The console is nothing but a client of the gateway's own HTTP API on
// the same origin: it submits requests, follows one live through its
// Server-Sent Events stream (falling back to long-polls), and lists recent
// requests and dead letters. It has no build step and fetches nothing from
// anywhere else at run time, and the Content-Security-Policy it is served
// with tells the browser to enforce exactly that.
//
// On a gateway that needs API keys the console logs in with one, keeps it
// in the tab's sessionStorage and sends it only in the Authorization
// header; EventSource, which cannot send headers, opens a request's stream
// with the short-lived read token that reads only that request. The files
// themselves are public: they hold nothing but code.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Prefix is the path the console is served under.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every response: the console loads and
// talks to its own origin only, runs no inline script or style, and may not
// be framed.
const ContentSecurityPolicy = "default-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"style-src 'self'; script-src 'self'; frame-ancestors 'none'"

//go:embed static
var static embed.FS

// contentTypes maps the extensions the console ships to their media types,
// fixed here rather than read from the host's mime tables, which differ
// between systems (a JavaScript module served as text/plain does not run).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// file is one embedded file, ready to serve.
type file struct {
	name        string
	body        []byte
	contentType string
	etag        string
}

// files are the embedded files by their path under Prefix. Only regular
// files are in it, so a directory is never listed: it is not found.
var files = mustLoad()

func mustLoad() map[string]file {
	m, err := load(static, "static")
	if err != nil {
		panic(fmt.Sprintf("web: %v", err)) // the embedded files are fixed at build time
	}
	return m
}

func load(fsys fs.FS, root string) (map[string]file, error) {
	sub, err := fs.Sub(fsys, root)
	if err != nil {
		return nil, err
	}
	m := map[string]file{}
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("embedded file %s has no known content type", name)
		}
		body, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		m[name] = file{name: name, body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	return m, err
}

// Handler serves the console under Prefix: /ui/ is the page itself, and
// /ui/<file> its scripts, styles and icon. Responses carry Cache-Control:
// no-cache with an ETag (so a new gateway version is picked up at once, and
// an unchanged file costs a 304), the Content-Security-Policy above and
// X-Content-Type-Options: nosniff. Anything else under the prefix is 404;
// methods other than GET and HEAD are 405.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		writeProblem(w, http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed",
			"the console only answers GET and HEAD")
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		writeProblem(w, http.StatusNotFound, "not-found", "Not found", "nothing is served at "+r.URL.Path)
		return
	}
	if name == "" {
		name = "index.html"
	}
	f, ok := files[name]
	if !ok {
		writeProblem(w, http.StatusNotFound, "not-found", "Not found", "the console has no file "+r.URL.Path)
		return
	}
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	// The zero time sends no Last-Modified: embedded files have none, and
	// the ETag does the revalidation.
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}

// writeProblem answers with an RFC 9457 problem, like the rest of the
// gateway's errors.
func writeProblem(w http.ResponseWriter, status int, kind, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}{"urn:switchboard:problem:" + kind, title, status, detail})
}

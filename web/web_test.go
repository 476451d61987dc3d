package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/require"
)

func get(t *testing.T, h http.Handler, method, target string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

func readBody(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return string(b)
}

// requireSecurityHeaders checks the headers every console response carries.
func requireSecurityHeaders(t *testing.T, res *http.Response) {
	t.Helper()
	require.Equal(t, "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
		res.Header.Get("Content-Security-Policy"))
	require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
}

func TestHandlerServesFiles(t *testing.T) {
	t.Parallel()
	h := Handler()
	for _, tc := range []struct {
		path, contentType, contains string
	}{
		{"/ui/", "text/html; charset=utf-8", `<script type="module" src="console.js"></script>`},
		{"/ui/index.html", "text/html; charset=utf-8", `<title>switchboard console</title>`},
		{"/ui/console.js", "text/javascript; charset=utf-8", `from './api.js'`},
		{"/ui/api.js", "text/javascript; charset=utf-8", `export function follow(`},
		{"/ui/dom.js", "text/javascript; charset=utf-8", `export function el(`},
		{"/ui/session.js", "text/javascript; charset=utf-8", `export function storedKey(`},
		{"/ui/console.css", "text/css; charset=utf-8", `.panel`},
		{"/ui/favicon.svg", "image/svg+xml", `<svg`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res := get(t, h, http.MethodGet, tc.path, nil)
			require.Equal(t, http.StatusOK, res.StatusCode)
			require.Equal(t, tc.contentType, res.Header.Get("Content-Type"))
			require.Equal(t, "no-cache", res.Header.Get("Cache-Control"))
			require.NotEmpty(t, res.Header.Get("ETag"))
			requireSecurityHeaders(t, res)
			require.Contains(t, readBody(t, res), tc.contains)

			// The ETag revalidates: an unchanged file costs a 304.
			res2 := get(t, h, http.MethodGet, tc.path, http.Header{"If-None-Match": {res.Header.Get("ETag")}})
			require.Equal(t, http.StatusNotModified, res2.StatusCode)
			require.Empty(t, readBody(t, res2))

			head := get(t, h, http.MethodHead, tc.path, nil)
			require.Equal(t, http.StatusOK, head.StatusCode)
			require.Equal(t, tc.contentType, head.Header.Get("Content-Type"))
			require.Empty(t, readBody(t, head))
		})
	}
}

func TestHandlerRefuses(t *testing.T) {
	t.Parallel()
	h := Handler()
	for _, tc := range []struct {
		name, method, path string
		status             int
	}{
		{"unknown file", http.MethodGet, "/ui/nope.js", http.StatusNotFound},
		{"embedded directory, no listing", http.MethodGet, "/ui/static/", http.StatusNotFound},
		{"embedded directory without slash", http.MethodGet, "/ui/static", http.StatusNotFound},
		{"file through the embedded directory", http.MethodGet, "/ui/static/index.html", http.StatusNotFound},
		{"the Go source", http.MethodGet, "/ui/web.go", http.StatusNotFound},
		{"dot segments", http.MethodGet, "/ui/../web.go", http.StatusNotFound},
		{"nested", http.MethodGet, "/ui/requests/0190f3c2-0000-7000-8000-000000000000", http.StatusNotFound},
		{"outside the prefix", http.MethodGet, "/console.js", http.StatusNotFound},
		{"post", http.MethodPost, "/ui/", http.StatusMethodNotAllowed},
		{"delete", http.MethodDelete, "/ui/console.js", http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := get(t, h, tc.method, tc.path, nil)
			require.Equal(t, tc.status, res.StatusCode)
			require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
			requireSecurityHeaders(t, res)
			body := readBody(t, res)
			require.Contains(t, body, `"status":`)
			require.NotContains(t, body, "<")
			if tc.status == http.StatusMethodNotAllowed {
				require.Equal(t, "GET, HEAD", res.Header.Get("Allow"))
			}
		})
	}
}

// TestHandlerMountedInChi mounts the handler the way the gateway's router
// does.
func TestHandlerMountedInChi(t *testing.T) {
	t.Parallel()
	r := chi.NewRouter()
	r.Handle("/ui/*", Handler())
	res := get(t, r, http.MethodGet, "/ui/", nil)
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", res.Header.Get("Content-Type"))
	res = get(t, r, http.MethodGet, "/ui/console.js", nil)
	require.Equal(t, http.StatusOK, res.StatusCode)
	res = get(t, r, http.MethodGet, "/ui/nope", nil)
	require.Equal(t, http.StatusNotFound, res.StatusCode)
}

// TestStaticFiles pins what the CSP and the no-network rule need of the
// files themselves: everything the page loads is one of the embedded files,
// nothing points at another origin, there is no inline script or style, and
// data never reaches the DOM as markup.
func TestStaticFiles(t *testing.T) {
	t.Parallel()
	sub, err := fs.Sub(static, "static")
	require.NoError(t, err)
	read := func(name string) string {
		b, err := fs.ReadFile(sub, name)
		require.NoError(t, err)
		return string(b)
	}

	index := read("index.html")
	refs := regexp.MustCompile(`(?:src|href)="([^"#]+)"`).FindAllStringSubmatch(index, -1)
	require.NotEmpty(t, refs)
	for _, m := range refs {
		require.Contains(t, files, m[1], "index.html refers to %s, which is not embedded", m[1])
	}
	require.NotRegexp(t, `<script(?:\s[^>]*)?>\s*[^<\s]`, index, "inline script")
	require.NotRegexp(t, `<style`, index, "inline style element")
	require.NotRegexp(t, `\sstyle=`, index, "inline style attribute")
	require.NotRegexp(t, `\son[a-z]+=`, index, "inline event handler")

	imports := regexp.MustCompile(`from '\./([^']+)'`)
	for name := range files {
		body := read(name)
		// The SVG namespace is a name, not something fetched.
		rest := strings.ReplaceAll(body, `xmlns="http://www.w3.org/2000/svg"`, "")
		require.NotRegexp(t, `(?i)https?:|(?:src|href|url)\(?\s*=?\s*["']?//`, rest, "%s points at another origin", name)
		if strings.HasSuffix(name, ".js") {
			for _, m := range imports.FindAllStringSubmatch(body, -1) {
				require.Contains(t, files, m[1], "%s imports %s, which is not embedded", name, m[1])
			}
			require.NotRegexp(t, `innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function`, body,
				"%s must build the DOM from text nodes", name)
			// The API key lives in sessionStorage (session.js) and is
			// sent in a header; nothing is logged, kept longer or put in
			// a cookie.
			require.NotRegexp(t, `localStorage|document\.cookie|indexedDB|\bconsole\.[a-z]+\(`, body, "%s", name)
			if name != "session.js" {
				require.NotContains(t, body, "sessionStorage", "%s: only session.js keeps the key", name)
			}
		}
	}
}

// TestLoginForm pins what keeps the API key out of URLs even if the
// script never ran: the field is a password field with no name, so no
// form submission carries it, and the form posts to the page, never GETs.
func TestLoginForm(t *testing.T) {
	t.Parallel()
	index := string(files["index.html"].body)
	form := regexp.MustCompile(`(?s)<form id="login-form"[^>]*>.*?</form>`).FindString(index)
	require.NotEmpty(t, form)
	require.Contains(t, form, `method="post"`)
	require.NotContains(t, form, "action=")
	require.Contains(t, form, `<label for="login-key">API key</label>`)
	input := regexp.MustCompile(`(?s)<input id="login-key"[^>]*>`).FindString(form)
	require.Contains(t, input, `type="password"`)
	require.NotContains(t, input, "name=")
	require.Len(t, regexp.MustCompile(`<(?:input|textarea|select)\b`).FindAllString(form, -1), 1, "the key is the form's only field")
	require.Regexp(t, `<section id="view-login"[^>]* hidden`, index, "the login shows only when the script says so")
}

package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
)

// fakeVerifier accepts one token.
type fakeVerifier struct {
	token string
	p     Principal
	err   error
}

func (f fakeVerifier) Verify(token string) (Principal, error) {
	if f.err != nil {
		return Principal{}, f.err
	}
	if token != f.token {
		return Principal{}, errors.New("bad token " + token) // the middleware must not repeat this
	}
	return f.p, nil
}

// syncBuffer is a log sink safe for the handler's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// echoPrincipal answers with the principal the middleware set.
var echoPrincipal = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	p, ok := FromContext(r.Context())
	if !ok {
		_, _ = w.Write([]byte("no principal"))
		return
	}
	_ = json.NewEncoder(w).Encode(p)
})

func serveOnce(h http.Handler, r *http.Request) (*httptest.ResponseRecorder, Principal, bool) {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var p Principal
	ok := w.Code == http.StatusOK && json.Unmarshal(w.Body.Bytes(), &p) == nil
	return w, p, ok
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	s, _ := newKeyStore(t)
	ctx := t.Context()
	k, secret, err := s.CreateKey(ctx, NewKey{ProjectID: DefaultProject, Name: "ci", Scopes: Scopes{"read:a.#"}})
	require.NoError(t, err)
	_, revoked, err := s.CreateKey(ctx, NewKey{ProjectID: DefaultProject, Name: "old", Scopes: Scopes{"read:a.#"}})
	require.NoError(t, err)
	revokedID := func() uuid.UUID {
		keys, err := s.Keys(ctx, DefaultProject, false)
		require.NoError(t, err)
		return keys[1].ID
	}()
	require.NoError(t, s.RevokeKey(ctx, DefaultProject, revokedID, false))
	reqID := uuid.New()
	tokenP := Principal{ProjectID: DefaultProject, ProjectName: "default", RequestID: reqID}
	logs := &syncBuffer{}
	h := Middleware(MiddlewareConfig{
		Store: s, Tokens: fakeVerifier{token: "good-token", p: tokenP},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Open:   []string{"/healthz", "/metrics", "/ui/"},
	})(echoPrincipal)

	get := func(path string, header ...string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		return r
	}

	// Open paths pass without a principal.
	for _, path := range []string{"/healthz", "/healthz/x", "/metrics", "/ui/", "/ui/app.js"} {
		w, _, _ := serveOnce(h, get(path))
		require.Equal(t, http.StatusOK, w.Code, path)
		require.Equal(t, "no principal", w.Body.String(), path)
	}
	// Lookalikes and unclean paths are not open.
	for _, path := range []string{"/healthzx", "/ui", "/ui/../v1/requests", "/ui//x", "/ui/./x", "/v1/healthz"} {
		w, _, _ := serveOnce(h, get(path))
		require.Equal(t, http.StatusUnauthorized, w.Code, path)
	}

	// A CORS preflight passes; a bare OPTIONS does not.
	pre := httptest.NewRequest(http.MethodOptions, "/v1/requests", nil)
	pre.Header.Set("Origin", "https://app.example")
	pre.Header.Set("Access-Control-Request-Method", "POST")
	w, _, _ := serveOnce(h, pre)
	require.Equal(t, "no principal", w.Body.String())
	w, _, _ = serveOnce(h, httptest.NewRequest(http.MethodOptions, "/v1/requests", nil))
	require.Equal(t, http.StatusUnauthorized, w.Code)

	// A key.
	w, p, ok := serveOnce(h, get("/v1/requests", "Authorization", "Bearer "+secret))
	require.True(t, ok, w.Body.String())
	require.Equal(t, k.ID, p.KeyID)
	require.Equal(t, Scopes{"read:a.#"}, p.Scopes)
	_, p, ok = serveOnce(h, get("/v1/requests", "Authorization", "bearer  "+secret))
	require.True(t, ok, "the scheme is case-insensitive")
	require.Equal(t, k.ID, p.KeyID)

	// A token, as a query parameter.
	w, p, ok = serveOnce(h, get("/v1/requests/"+reqID.String()+"/events?access_token=good-token"))
	require.True(t, ok, w.Body.String())
	require.Equal(t, tokenP, p)

	// The header wins over the query parameter.
	_, p, ok = serveOnce(h, get("/v1/requests?access_token=good-token", "Authorization", "Bearer "+secret))
	require.True(t, ok)
	require.Equal(t, k.ID, p.KeyID)

	// Refusals: the exact answer, and nothing of the credentials in it or the logs.
	for _, tc := range []struct {
		name   string
		r      *http.Request
		detail string
	}{
		{"no credentials", get("/v1/requests"), "this call needs credentials: send an API key as 'Authorization: Bearer <key>'"},
		{"basic auth", get("/v1/requests", "Authorization", "Basic dXNlcjpwYXNz"), "the Authorization header must be 'Bearer <key>'"},
		{"empty bearer", get("/v1/requests", "Authorization", "Bearer "), "the Authorization header must be 'Bearer <key>'"},
		{"not a key", get("/v1/requests", "Authorization", "Bearer hunter2"), "the API key is not valid: unknown, revoked or expired"},
		{"revoked", get("/v1/requests", "Authorization", "Bearer "+revoked), "the API key is not valid: unknown, revoked or expired"},
		{"wrong key", get("/v1/requests", "Authorization", "Bearer sb_"+strings.Repeat("A", 43)), "the API key is not valid: unknown, revoked or expired"},
		{"bad token", get("/v1/requests?access_token=bad-token"), "the access token is not valid or has expired"},
		{"empty token", get("/v1/requests?access_token="), "the access token is not valid"},
	} {
		w, _, _ := serveOnce(h, tc.r)
		require.Equal(t, http.StatusUnauthorized, w.Code, tc.name)
		require.Equal(t, `Bearer realm="switchboard"`, w.Header().Get("WWW-Authenticate"), tc.name)
		require.Equal(t, "no-store", w.Header().Get("Cache-Control"), tc.name)
		require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"), tc.name)
		require.JSONEq(t, `{"type":"urn:switchboard:problem:unauthorized","title":"Unauthorized","status":401,"detail":`+
			strconvQuote(tc.detail)+`}`, w.Body.String(), tc.name)
	}
	for _, secretish := range []string{secret, revoked, "hunter2", "bad-token", "dXNlcjpwYXNz"} {
		require.NotContains(t, logs.String(), secretish)
	}

	// Without a verifier, tokens are refused.
	noTokens := Middleware(MiddlewareConfig{Store: s})(echoPrincipal)
	w, _, _ = serveOnce(noTokens, get("/v1/requests?access_token=good-token"))
	require.Equal(t, http.StatusUnauthorized, w.Code)
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestMiddlewareInsecure(t *testing.T) {
	t.Parallel()
	s, _ := newKeyStore(t)
	_, secret, err := s.CreateKey(t.Context(), NewKey{ProjectID: DefaultProject, Name: "ci", Scopes: Scopes{"read:a.#"}})
	require.NoError(t, err)
	logs := &syncBuffer{}
	h := Middleware(MiddlewareConfig{Store: s, Insecure: true, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Open: []string{"/healthz"}})(echoPrincipal)

	for range 3 {
		w, p, ok := serveOnce(h, httptest.NewRequest(http.MethodGet, "/v1/requests", nil))
		require.True(t, ok, w.Body.String())
		require.Equal(t, InsecurePrincipal(), p)
	}
	require.Equal(t, 3, strings.Count(logs.String(), "--insecure-no-auth: request served without authentication"),
		"a warning on every request")
	require.Contains(t, logs.String(), "level=WARN")

	// An open path logs nothing; a key is still honoured, and a bad one refused.
	serveOnce(h, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	r := httptest.NewRequest(http.MethodGet, "/v1/requests", nil)
	r.Header.Set("Authorization", "Bearer "+secret)
	_, p, ok := serveOnce(h, r)
	require.True(t, ok)
	require.False(t, p.Insecure)
	r = httptest.NewRequest(http.MethodGet, "/v1/requests", nil)
	r.Header.Set("Authorization", "Bearer nope")
	w, _, _ := serveOnce(h, r)
	require.Equal(t, http.StatusUnauthorized, w.Code)
	require.Equal(t, 3, strings.Count(logs.String(), "--insecure-no-auth"))
}

func TestMiddlewareOutage(t *testing.T) {
	t.Parallel()
	s, pool := newKeyStore(t)
	_, secret, err := s.CreateKey(t.Context(), NewKey{ProjectID: DefaultProject, Name: "ci", Scopes: Scopes{"read:a.#"}})
	require.NoError(t, err)
	logs := &syncBuffer{}
	h := Middleware(MiddlewareConfig{Store: s, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Tokens: fakeVerifier{err: correlation.ErrUnavailable}})(echoPrincipal)
	pool.Close()

	r := httptest.NewRequest(http.MethodGet, "/v1/requests", nil)
	r.Header.Set("Authorization", "Bearer "+secret)
	for _, r := range []*http.Request{r, httptest.NewRequest(http.MethodGet, "/v1/requests?access_token=t", nil)} {
		w, _, _ := serveOnce(h, r)
		require.Equal(t, http.StatusServiceUnavailable, w.Code)
		require.Equal(t, "5", w.Header().Get("Retry-After"))
		require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
		require.JSONEq(t, `{"type":"urn:switchboard:problem:unavailable","title":"Service unavailable","status":503,
			"detail":"the gateway cannot check credentials now; try again later"}`, w.Body.String())
	}
	require.NotContains(t, logs.String(), secret)
}

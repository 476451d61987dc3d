package api_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/api"
	"github.com/switchboard-gw/switchboard/auth"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// The security tests of issue 8: who may call what (the authorization
// matrix over every route), read tokens' scope and expiry, and hostile
// input in routing keys, headers and query parameters.

// secCred is one credential the matrix calls every route with.
type secCred struct {
	name   string
	header map[string]string // Authorization, when it is a key
	token  string            // access_token, when it is a read token
	secret string            // the text that must never come back
}

// secExp is the answer a credential must get.
type secExp struct {
	status int
	kind   string // the problem type; "" for a success
	// bug, when set, names a product bug this cell exposes: the cell is
	// skipped with it so the rest of the matrix lands. See the report.
	bug string
}

// secRoute is one route of the router and what each credential gets.
type secRoute struct {
	op      string // "METHOD /template", as the router walks it
	method  string
	path    string // with {id} for the target
	headers map[string]string
	body    func() string
	// target is what {id} stands for: "request" (default) or "key".
	target string
	// open routes are served without authentication.
	open bool
	exp  map[string]secExp
}

// The credentials. The first five are refused before any handler runs.
const (
	credNone       = "none"
	credMalformed  = "malformed"
	credUnknown    = "unknown"
	credRevoked    = "revoked"
	credExpired    = "expired"
	credOther      = "other-project"   // bob: admin, submit:#, read:#
	credNoScope    = "no-read-scope"   // alice: read:elsewhere.#
	credReadOnly   = "read-only"       // alice: read:mx.#
	credOtherToken = "token-of-other"  // a read token of another alice request
	credOwnToken   = "token-of-target" // the target's own read token
	credRight      = "right-key"       // alice: submit:mx.#, read:mx.#
	credAdmin      = "project-admin"   // alice: admin
	credOperator   = "operator"        // default: admin
)

var unauthenticated = []string{credNone, credMalformed, credUnknown, credRevoked, credExpired}

// nonOwners may learn nothing of the target request.
var nonOwners = append(slices.Clone(unauthenticated), credOther, credNoScope, credOtherToken)

func ok(status int) secExp { return secExp{status: status} }

var (
	notFound  = secExp{status: 404, kind: "not-found"}
	forbidden = secExp{status: 403, kind: "forbidden"}
	unknownID = secExp{status: 404, kind: "unknown-correlation"}
)

// expect returns the map for the authenticated credentials; the five
// unauthenticated ones are filled in by the matrix.
func expect(other, noScope, readOnly, otherToken, ownToken, right, admin, operator secExp) map[string]secExp {
	return map[string]secExp{credOther: other, credNoScope: noScope, credReadOnly: readOnly,
		credOtherToken: otherToken, credOwnToken: ownToken, credRight: right, credAdmin: admin, credOperator: operator}
}

// secRoutes lists every route of the router with the answers the design
// asks for (issue 8): another project's request ids are 404, a missing
// scope 403 where the caller may see the request, a read token reads its
// one request and changes nothing.
func secRoutes() []secRoute {
	readers := expect(notFound, notFound, ok(200), notFound, ok(200), ok(200), ok(200), ok(200))
	replyReaders := expect(notFound, notFound, ok(202), notFound, ok(202), ok(202), ok(202), ok(202))
	changers := func(right secExp) map[string]secExp {
		// admin implies reading, not submitting: admins and operators may
		// see the request but not change it.
		return expect(notFound, notFound, forbidden, notFound, forbidden, right, forbidden, forbidden)
	}
	admins := expect(ok(200), forbidden, forbidden, forbidden, forbidden, forbidden, ok(200), ok(200))
	operatorOnly := func(operator secExp) map[string]secExp {
		return expect(forbidden, forbidden, forbidden, forbidden, forbidden, forbidden, forbidden, operator)
	}
	all200 := map[string]secExp{}
	empty := func() string { return "" }
	jsonBody := func(s string) func() string { return func() string { return s } }
	n := 0
	newProject := func() string { n++; return fmt.Sprintf(`{"name": "sec-%d-%s"}`, n, testsvc.RandomSuffix()) }

	readToken := expect(notFound, notFound, ok(200), notFound, ok(200), ok(200), ok(200), ok(200))
	// A token may not mint its successor, or it would never expire.
	readToken[credOwnToken] = secExp{status: 403, kind: "forbidden"}

	return []secRoute{
		{op: "GET /healthz", method: "GET", path: "/healthz", body: empty, open: true, exp: all200},
		{op: "GET /readyz", method: "GET", path: "/readyz", body: empty, open: true, exp: all200},
		{op: "GET /metrics", method: "GET", path: "/metrics", body: empty, open: true, exp: all200},

		{op: "GET /v1/requests", method: "GET", path: "/v1/requests", body: empty,
			exp: expect(ok(200), ok(200), ok(200), forbidden, forbidden, ok(200), ok(200), ok(200))},
		{op: "GET /v1/requests/{id}", method: "GET", path: "/v1/requests/{id}", body: empty, exp: readers},
		{op: "DELETE /v1/requests/{id}", method: "DELETE", path: "/v1/requests/{id}", body: empty, exp: changers(ok(200))},
		{op: "GET /v1/requests/{id}/reply", method: "GET", path: "/v1/requests/{id}/reply", body: empty, exp: replyReaders},
		{op: "GET /v1/blobs/{id}", method: "GET", path: "/v1/blobs/{id}", body: empty, exp: readers},
		{op: "GET /v1/requests/{id}/deliveries", method: "GET", path: "/v1/requests/{id}/deliveries", body: empty, exp: readers},
		// The target has no webhook, so the right key's answer is the
		// handler's own 404 (checked by its detail below), past the checks.
		{op: "POST /v1/requests/{id}/deliveries/retry", method: "POST", path: "/v1/requests/{id}/deliveries/retry", body: empty,
			exp: changers(notFound)},
		{op: "GET /v1/requests/{id}/events", method: "GET", path: "/v1/requests/{id}/events", body: empty, exp: readers},
		{op: "POST /v1/requests/{id}/events", method: "POST", path: "/v1/requests/{id}/events", headers: jsonCT,
			body: jsonBody(`{"step": 1}`), exp: changers(ok(202))},
		{op: "GET /v1/events", method: "GET", path: "/v1/events", body: empty,
			exp: expect(ok(200), ok(200), ok(200), forbidden, forbidden, ok(200), ok(200), ok(200))},
		{op: "POST /v1/requests/{id}/read-token", method: "POST", path: "/v1/requests/{id}/read-token", body: empty, exp: readToken},

		// The rule engine is off in the harness: past operatorOnly its
		// routes answer 404. A key that may submit to hooks.<source> may
		// post that hook (bob's submit:# does).
		{op: "POST /v1/hooks/{source}", method: "POST", path: "/v1/hooks/mx", headers: jsonCT, body: jsonBody(`{}`),
			exp: expect(notFound, forbidden, forbidden, forbidden, forbidden, forbidden, forbidden, notFound)},
		{op: "GET /v1/rules", method: "GET", path: "/v1/rules", body: empty, exp: operatorOnly(notFound)},
		{op: "POST /v1/rules/test", method: "POST", path: "/v1/rules/test", headers: jsonCT, body: jsonBody(`{}`),
			exp: operatorOnly(notFound)},
		{op: "GET /v1/rules/{name}/firings", method: "GET", path: "/v1/rules/r1/firings", body: empty, exp: operatorOnly(notFound)},

		{op: "POST /v1/admin/projects", method: "POST", path: "/v1/admin/projects", headers: jsonCT, body: newProject,
			exp: operatorOnly(ok(201))},
		{op: "GET /v1/admin/projects", method: "GET", path: "/v1/admin/projects", body: empty, exp: admins},
		{op: "POST /v1/admin/keys", method: "POST", path: "/v1/admin/keys", headers: jsonCT,
			body: jsonBody(`{"name": "made", "scopes": ["read:mx.#"]}`),
			exp:  expect(ok(201), forbidden, forbidden, forbidden, forbidden, forbidden, ok(201), ok(201))},
		{op: "GET /v1/admin/keys", method: "GET", path: "/v1/admin/keys", body: empty, exp: admins},
		// {id} is a key of alice's: bob's admin cannot see it.
		{op: "DELETE /v1/admin/keys/{id}", method: "DELETE", path: "/v1/admin/keys/{id}", body: empty, target: "key",
			exp: expect(notFound, forbidden, forbidden, forbidden, forbidden, forbidden, ok(204), ok(204))},
		{op: "GET /v1/audit", method: "GET", path: "/v1/audit", body: empty, exp: admins},

		{op: "POST /v1/replies", method: "POST", path: "/v1/replies", headers: with(jsonCT, "Correlation-ID", "{id}"),
			body: jsonBody(`{"ok": true}`), exp: expect(unknownID, unknownID, ok(200), unknownID, unknownID, ok(200), ok(200), ok(200))},
		{op: "GET /v1/dead-letters", method: "GET", path: "/v1/dead-letters", body: empty, exp: admins},
		{op: "POST /{routingPath}", method: "POST", path: "/mx/probe", headers: jsonCT, body: jsonBody(`{"probe": true}`),
			exp: expect(ok(202), forbidden, forbidden, forbidden, forbidden, ok(202), forbidden, forbidden)},
	}
}

var secParamRE = regexp.MustCompile(`\{(\w+)(:[^}]*)?\}`)

// routesOf walks the router as api/openapi_test.go's routerOperations
// does, so a route added to the router and not to secRoutes fails here.
func routesOf(t *testing.T, h http.Handler) []string {
	t.Helper()
	routes, isRoutes := h.(chi.Routes)
	require.True(t, isRoutes, "Handler() is a %T, not chi.Routes", h)
	var ops []string
	require.NoError(t, chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if route == "/*" {
			route = "/{routingPath}"
		}
		ops = append(ops, method+" "+secParamRE.ReplaceAllString(route, "{$1}"))
		return nil
	}))
	slices.Sort(ops)
	return ops
}

// secDo calls path, bounded: an event stream is read for a moment and then
// left, so a route that streams answers like any other.
func (b *bundle) secDo(t *testing.T, method, path string, headers map[string]string, body string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.url+path, rd)
	require.NoError(t, err)
	for k, v := range headers {
		req.Header[http.CanonicalHeaderKey(k)] = []string{v}
	}
	res, err := b.http.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		stop := time.AfterFunc(500*time.Millisecond, cancel)
		defer stop.Stop()
		out, _ := io.ReadAll(res.Body) // ends when the stream is left
		return response{status: res.StatusCode, header: res.Header, body: out}
	}
	out, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: out}
}

// secSubmit submits a request as alice and returns its id and read token.
func (b *bundle) secSubmit(t *testing.T, key map[string]string, path, body string) (string, string) {
	t.Helper()
	res := b.do(t, "POST", path, with(jsonCT, flatten(key)...), body)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	return res.header.Get("Message-ID"), res.header.Get("Read-Token")
}

// secKey creates a key of project directly in the store.
func (b *bundle) secKey(t *testing.T, project string, expires *time.Time, scopes ...string) (auth.Key, string) {
	t.Helper()
	ctx := context.Background()
	p, err := b.keys.ProjectByName(ctx, project)
	require.NoError(t, err)
	sc, err := auth.ParseScopes(scopes)
	require.NoError(t, err)
	k, secret, err := b.keys.CreateKey(ctx, auth.NewKey{ProjectID: p.ID, Name: "security", Scopes: sc, ExpiresAt: expires})
	require.NoError(t, err)
	return k, secret
}

func bearer(secret string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + secret}
}

// TestSecurityMatrix calls every route of the router with every kind of
// credential and checks the exact answer, and that nothing leaks: no answer
// to a non-owner holds the target request's id, routing key or body, and no
// answer holds a key or token.
func TestSecurityMatrix(t *testing.T) {
	t.Parallel()
	// The target's body goes by claim check, so GET /v1/blobs/{id} has a
	// blob to guard: the blob of a request is named by the request's id.
	b := setup(t, options{auth: &auth.Limits{}, blobs: true, apiCfg: func(c *api.Config) { c.ClaimCheckBytes = 16 }})
	b.bindQueue(t, "matrix", "mx.#")
	ctx := context.Background()

	right := b.key(t, "alice", "submit:mx.#", "read:mx.#")
	adminKey := b.key(t, "alice", "admin")
	readOnly := b.key(t, "alice", "read:mx.#")
	noScope := b.key(t, "alice", "read:elsewhere.#")
	other := b.key(t, "bob", "admin", "submit:#", "read:#")
	operator := b.key(t, auth.DefaultProjectName, "admin")

	revokedKey, revoked := b.secKey(t, "alice", nil, "submit:#", "read:#", "admin")
	require.NoError(t, b.keys.RevokeKey(ctx, revokedKey.ProjectID, revokedKey.ID, false))
	// The store refuses a past expiry, so the key is made to expire in SQL
	// before it is ever used (and so before Authenticate caches it).
	soon := time.Now().Add(time.Hour)
	expiredKey, expired := b.secKey(t, "alice", &soon, "submit:#", "read:#", "admin")
	_, err := b.pool.Exec(ctx, `UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1`, expiredKey.ID)
	require.NoError(t, err)
	unknownBytes := make([]byte, 32)
	_, _ = rand.Read(unknownBytes)
	unknown := "sb_" + base64.RawURLEncoding.EncodeToString(unknownBytes)
	require.Len(t, unknown, 3+43)

	// The target: alice's pending request, with a routing key and a body
	// that appear nowhere else.
	suffix := testsvc.RandomSuffix()
	routingKey := "mx.vault" + suffix
	marker := "s3cr3t-" + suffix
	target, ownToken := b.secSubmit(t, right, "/mx/vault"+suffix, `{"secret": "`+marker+`"}`)
	_, otherToken := b.secSubmit(t, right, "/mx/elsewhere", `{}`)
	require.NotEmpty(t, ownToken)
	require.NotEmpty(t, otherToken)
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM blobs WHERE id = $1`, target), "the target's body is a blob")

	secretOf := func(h map[string]string) string { return strings.TrimPrefix(h["Authorization"], "Bearer ") }
	creds := []secCred{
		{name: credNone},
		{name: credMalformed, header: bearer("sb_!!not*a*key"), secret: "sb_!!not*a*key"},
		{name: credUnknown, header: bearer(unknown), secret: unknown},
		{name: credRevoked, header: bearer(revoked), secret: revoked},
		{name: credExpired, header: bearer(expired), secret: expired},
		{name: credOther, header: other, secret: secretOf(other)},
		{name: credNoScope, header: noScope, secret: secretOf(noScope)},
		{name: credReadOnly, header: readOnly, secret: secretOf(readOnly)},
		{name: credOtherToken, token: otherToken, secret: otherToken},
		{name: credOwnToken, token: ownToken, secret: ownToken},
		{name: credRight, header: right, secret: secretOf(right)},
		{name: credAdmin, header: adminKey, secret: secretOf(adminKey)},
		{name: credOperator, header: operator, secret: secretOf(operator)},
	}

	routes := secRoutes()
	var listed []string
	for _, r := range routes {
		listed = append(listed, r.op)
	}
	slices.Sort(listed)
	require.Equal(t, routesOf(t, b.api.Handler()), listed,
		"the matrix must list exactly the router's routes: add the new route to secRoutes")

	// sacrificial returns a fresh key of alice's for DELETE /admin/keys/{id}.
	sacrificial := func() string {
		k, _ := b.secKey(t, "alice", nil, "read:mx.#")
		return k.ID.String()
	}
	victimKey := sacrificial()

	for _, route := range routes {
		refusals := map[string]string{} // credential -> 401 detail
		for _, c := range creds {
			t.Run(route.op+"/"+c.name, func(t *testing.T) {
				want, known := route.exp[c.name]
				switch {
				case route.open:
					want = ok(200)
				case slices.Contains(unauthenticated, c.name):
					want = secExp{status: 401, kind: "unauthorized"}
				case !known:
					t.Fatalf("no expectation for %s", c.name)
				}
				if want.bug != "" {
					t.Skip("BUG: " + want.bug)
				}
				// A call that succeeds and changes something gets a fresh
				// target, so the shared one stays pending for the rest.
				id := target
				mutating := route.method != "GET" && route.op != "POST /v1/requests/{id}/read-token"
				if route.target == "key" {
					id = victimKey
					if want.status < 300 {
						id = sacrificial()
					}
				} else if mutating && want.status < 300 && (strings.Contains(route.op, "{id}") || route.op == "POST /v1/replies") {
					id, _ = b.secSubmit(t, right, "/mx/fresh", `{}`)
				}
				path := strings.ReplaceAll(route.path, "{id}", id)
				headers := map[string]string{}
				for k, v := range route.headers {
					headers[k] = strings.ReplaceAll(v, "{id}", id)
				}
				for k, v := range c.header {
					headers[k] = v
				}
				if c.token != "" {
					sep := "?"
					if strings.Contains(path, "?") {
						sep = "&"
					}
					path += sep + "access_token=" + url.QueryEscape(c.token)
				}
				res := b.secDo(t, route.method, path, headers, route.body())

				if want.kind != "" {
					requireProblem(t, res, want.status, want.kind)
				} else {
					require.Equal(t, want.status, res.status, "body: %s", res.body)
				}
				if want.status == 401 {
					require.Equal(t, `Bearer realm="switchboard"`, res.header.Get("WWW-Authenticate"))
					refusals[c.name] = string(res.body)
				}
				if route.op == "POST /v1/requests/{id}/deliveries/retry" && c.name == credRight {
					require.Contains(t, string(res.body), "webhook delivery", "the right key gets past the checks")
				}

				// Nothing leaks.
				text := string(res.body)
				for k, vs := range res.header {
					text += "\n" + k + ": " + strings.Join(vs, ", ")
				}
				for _, other := range creds {
					if other.secret == "" {
						continue
					}
					if route.op == "POST /v1/requests/{id}/read-token" && other.name == credOwnToken && res.status == 200 {
						continue // minting for the target in the same second gives the same token
					}
					require.NotContains(t, text, other.secret, "the answer holds the secret of %s", other.name)
				}
				if slices.Contains(nonOwners, c.name) {
					require.NotContains(t, text, target, "the answer to %s holds the target's id", c.name)
					require.NotContains(t, text, routingKey, "the answer to %s holds the target's routing key", c.name)
					require.NotContains(t, text, "vault"+suffix, "the answer to %s holds the target's path", c.name)
					require.NotContains(t, text, marker, "the answer to %s holds the target's body", c.name)
				}
			})
		}
		// Unknown, revoked and expired keys are refused alike: the answer is
		// no oracle for which keys exist.
		if !route.open && refusals[credUnknown] != "" {
			require.Equal(t, refusals[credUnknown], refusals[credRevoked], "%s: revoked and unknown keys answer alike", route.op)
			require.Equal(t, refusals[credUnknown], refusals[credExpired], "%s: expired and unknown keys answer alike", route.op)
		}
	}

	// No one but alice changed the target; and the owners see it listed.
	rec := b.do(t, "GET", "/v1/requests/"+target, right, "")
	require.Equal(t, 200, rec.status, "body: %s", rec.body)
	require.Equal(t, "pending", rec.json(t)["status"], "no credential of the matrix changed the target")
	require.Equal(t, 0, b.count(t, `SELECT count(*) FROM requests WHERE id = $1 AND status <> 'pending'`, target))
	require.Contains(t, string(b.do(t, "GET", "/v1/requests", right, "").body), target)
	require.Contains(t, string(b.do(t, "GET", "/v1/requests", operator, "").body), target)
	require.Contains(t, string(b.do(t, "GET", "/v1/audit", adminKey, "").body), target, "alice's admin sees her audit trail")

	// A project admin cannot reach into another project by name.
	requireProblem(t, b.do(t, "POST", "/v1/admin/keys", with(jsonCT, flatten(other)...),
		`{"project": "alice", "name": "x", "scopes": ["read:#"]}`), 404, "not-found")
	requireProblem(t, b.do(t, "GET", "/v1/admin/keys?project=alice", other, ""), 404, "not-found")
	requireProblem(t, b.do(t, "GET", "/v1/audit?project=alice", other, ""), 403, "forbidden")
}

// A second project's topic stream carries none of the first project's
// events, while the first project's own stream does.
func TestSecurityStreamsAreIsolated(t *testing.T) {
	t.Parallel()
	b := setup(t, options{auth: &auth.Limits{}})
	b.bindQueue(t, "streams", "st.#")
	alice := b.key(t, "alice", "submit:st.#", "read:st.#")
	bob := b.key(t, "bob", "submit:#", "read:#", "admin")

	type stream struct {
		body chan string
	}
	open := func(key map[string]string) stream {
		s := stream{body: make(chan string, 1)}
		ready := make(chan struct{})
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", b.url+"/v1/events?topic=%23", nil)
			for k, v := range key {
				req.Header.Set(k, v)
			}
			res, err := b.http.Do(req)
			if err != nil {
				close(ready)
				s.body <- "error: " + err.Error()
				return
			}
			defer res.Body.Close()
			close(ready)
			out, _ := io.ReadAll(res.Body)
			s.body <- string(out)
		}()
		<-ready
		return s
	}
	aliceStream, bobStream := open(alice), open(bob)
	time.Sleep(300 * time.Millisecond) // both subscribed
	id, _ := b.secSubmit(t, alice, "/st/private", `{"n": 1}`)
	res := b.do(t, "POST", "/v1/requests/"+id+"/events", with(jsonCT, flatten(alice)...), `{"progress": "private-progress"}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	require.Equal(t, 200, b.do(t, "DELETE", "/v1/requests/"+id, alice, "").status)

	seen := <-aliceStream.body
	require.Contains(t, seen, id, "the owner's stream carries its events")
	require.NotContains(t, <-bobStream.body, id, "another project's stream carries none of them")
}

// TestSecurityReadTokenScopeAndExpiry: a read token reads its own request,
// and nothing once expired. The harness mints tokens that live a minute,
// so expired tokens are minted here with its secret: one dated in the past,
// and one with a one-second life that the test outlives.
func TestSecurityReadTokenScopeAndExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t, options{auth: &auth.Limits{}})
	b.bindQueue(t, "tokens", "tk.#")
	alice := b.key(t, "alice", "submit:tk.#", "read:tk.#")
	id, token := b.secSubmit(t, alice, "/tk/a", `{}`)
	project, err := b.keys.ProjectByName(context.Background(), "alice")
	require.NoError(t, err)
	requestID := uuid.MustParse(id)

	read := func(tok string) response {
		return b.do(t, "GET", "/v1/requests/"+id+"?access_token="+url.QueryEscape(tok), nil, "")
	}
	require.Equal(t, 200, read(token).status)
	require.Equal(t, 202, b.do(t, "GET", "/v1/requests/"+id+"/reply?access_token="+url.QueryEscape(token), nil, "").status)
	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+id+"/events?access_token="+url.QueryEscape(token), nil, "").status)

	// The same secret as the harness's (see setup).
	secret := []byte("a test secret of thirty-two bytes")
	valid, _ := auth.NewTokens(secret, time.Minute).Mint(project.ID, requestID, time.Now())
	require.Equal(t, 200, read(valid).status, "a token minted here with the harness's secret is valid")

	stale, expires := auth.NewTokens(secret, time.Minute).Mint(project.ID, requestID, time.Now().Add(-2*time.Minute))
	require.True(t, expires.Before(time.Now()))
	res := read(stale)
	requireProblem(t, res, 401, "unauthorized")
	require.NotContains(t, string(res.body), id)

	short, _ := auth.NewTokens(secret, time.Second).Mint(project.ID, requestID, time.Now())
	require.Equal(t, 200, read(short).status, "valid before its expiry")
	time.Sleep(2100 * time.Millisecond)
	requireProblem(t, read(short), 401, "unauthorized")

	// Another secret, another project, a flipped character: all 401 or 404.
	forged, _ := auth.NewTokens([]byte("another secret of thirty-two byt"), time.Minute).Mint(project.ID, requestID, time.Now())
	requireProblem(t, read(forged), 401, "unauthorized")
	flipped := []byte(token)
	flipped[len(flipped)-2] ^= 1
	requireProblem(t, read(string(flipped)), 401, "unauthorized")
	misnamed, _ := auth.NewTokens(secret, time.Minute).Mint(uuid.New(), requestID, time.Now())
	requireProblem(t, read(misnamed), 404, "not-found")
	// A token and a key together: the key decides.
	requireProblem(t, b.do(t, "GET", "/v1/requests/"+id+"?access_token="+url.QueryEscape(token),
		bearer("sb_"+strings.Repeat("A", 43)), ""), 401, "unauthorized")
}

// secInjection is a hostile call and the 4xx it must get.
type secInjection struct {
	name    string
	method  string
	path    string // sent as is: escapes stay escaped
	headers map[string]string
	body    string
	status  int    // 0: any 4xx
	kind    string // "" with status 0: any problem type
	// bug, when set, names the product bug this case exposes: it is
	// skipped with it so the rest lands. See the report.
	bug string
}

// TestSecurityInjection sends routing keys, headers and query parameters
// crafted to escape their place: each gets a clean 4xx problem, never a
// 5xx, and the requests table is as it was.
func TestSecurityInjection(t *testing.T) {
	t.Parallel()
	b := setup(t, options{auth: &auth.Limits{}})
	b.bindQueue(t, "inject", "#")
	key := b.key(t, "alice", "submit:#", "read:#", "admin")
	operator := b.key(t, auth.DefaultProjectName, "admin", "read:#")
	id, _ := b.secSubmit(t, key, "/in/a", `{}`)
	before := b.count(t, `SELECT count(*) FROM requests`)

	sql := "'; DROP TABLE requests; --"
	q := url.QueryEscape
	k := func(kv ...string) map[string]string { return with(with(jsonCT, flatten(key)...), kv...) }
	big := strings.Repeat("A", 60<<10)
	cases := []secInjection{
		// Routing keys, through the path.
		{name: "dot-dot", method: "POST", path: "/in/../v1/requests", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "dot-dot segment", method: "POST", path: "/in/..", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "escaped slash", method: "POST", path: "/in/a%2Fb", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "escaped traversal", method: "POST", path: "/in/..%2F..%2Fetc%2Fpasswd", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "traversal", method: "POST", path: "/../../etc/passwd", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "nul", method: "POST", path: "/in/a%00b", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "star", method: "POST", path: "/in/*", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "hash", method: "POST", path: "/in/%23", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "dot in segment", method: "POST", path: "/in/a.b", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "unicode", method: "POST", path: "/in/%C3%A9t%C3%A9", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "non-utf8", method: "POST", path: "/in/%FF%FE", headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "sql", method: "POST", path: "/in/" + url.PathEscape(sql), headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "long segment", method: "POST", path: "/in/" + strings.Repeat("a", 65), headers: k(), body: `{}`, status: 400, kind: "invalid-path"},
		{name: "many segments", method: "POST", path: strings.Repeat("/a", 9), headers: k(), body: `{}`, status: 400, kind: "invalid-path"},

		// Headers (Go's client refuses CR, LF and NUL: see the raw case).
		{name: "message-id sql", method: "POST", path: "/in/a", headers: k("Message-ID", sql), body: `{}`, status: 400, kind: "invalid-header"},
		{name: "message-id huge", method: "POST", path: "/in/a", headers: k("Message-ID", big), body: `{}`, status: 400, kind: "invalid-header"},
		{name: "message-id non-utf8", method: "POST", path: "/in/a", headers: k("Message-ID", "\xff\xfe"), body: `{}`, status: 400, kind: "invalid-header"},
		{name: "time negative", method: "POST", path: "/in/a", headers: k("Time", "-1"), body: `{}`, status: 400, kind: "invalid-header"},
		{name: "time huge", method: "POST", path: "/in/a", headers: k("Time", "99999999999999999999999"), body: `{}`, status: 400, kind: "invalid-header"},
		{name: "timeout negative", method: "POST", path: "/in/a", headers: k("Request-Timeout", "-5"), body: `{}`, status: 400, kind: "invalid-header"},
		{name: "timeout huge", method: "POST", path: "/in/a", headers: k("Request-Timeout", "1e309"), body: `{}`, status: 400, kind: "invalid-header"},
		{name: "timeout sql", method: "POST", path: "/in/a", headers: k("Request-Timeout", sql), body: `{}`, status: 400, kind: "invalid-header"},
		{name: "reply-to script", method: "POST", path: "/in/a", headers: k("Reply-To", "javascript:alert(1)"), body: `{}`, status: 400},
		{name: "reply-to metadata", method: "POST", path: "/in/a", headers: k("Reply-To", "http://169.254.169.254/latest/meta-data"), body: `{}`, status: 400},
		{name: "content-type charset", method: "POST", path: "/in/a", headers: k("Content-Type", "application/json; charset=utf-7"), body: `{}`, status: 415, kind: "unsupported-media-type"},
		{name: "authorization sql", method: "GET", path: "/v1/requests", headers: map[string]string{"Authorization": "Bearer " + sql}, status: 401, kind: "unauthorized"},
		{name: "authorization huge", method: "GET", path: "/v1/requests", headers: map[string]string{"Authorization": "Bearer sb_" + big}, status: 401, kind: "unauthorized"},
		{name: "authorization non-utf8", method: "GET", path: "/v1/requests", headers: map[string]string{"Authorization": "Bearer sb_\xff\xfe"}, status: 401, kind: "unauthorized"},
		{name: "access_token sql", method: "GET", path: "/v1/requests/" + id + "?access_token=" + q(sql), status: 401, kind: "unauthorized"},
		{name: "access_token non-utf8", method: "GET", path: "/v1/requests/" + id + "?access_token=sbt_%FF.%FE", status: 401, kind: "unauthorized"},
		{name: "correlation-id sql", method: "POST", path: "/v1/replies", headers: k("Correlation-ID", sql), body: `{}`, status: 404, kind: "unknown-correlation"},
		{name: "correlation-id huge", method: "POST", path: "/v1/replies", headers: k("Correlation-ID", big), body: `{}`, status: 400, kind: "invalid-header"},
		{name: "correlation-id non-utf8", method: "POST", path: "/v1/replies", headers: k("Correlation-ID", "\xff\xfe"), body: `{}`, status: 400, kind: "invalid-header"},
		{name: "last-event-id sql", method: "GET", path: "/v1/requests/" + id + "/events", headers: k("Last-Event-ID", sql), status: 400, kind: "invalid-header"},

		// Query parameters.
		{name: "wait sql", method: "GET", path: "/v1/requests/" + id + "?wait=" + q(sql), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "wait negative", method: "GET", path: "/v1/requests/" + id + "?wait=-1", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "wait huge", method: "GET", path: "/v1/requests/" + id + "/reply?wait=99999999999999999999999", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "wait non-utf8", method: "GET", path: "/v1/requests/" + id + "?wait=%FF", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "limit sql", method: "GET", path: "/v1/requests?limit=" + q(sql), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "limit negative", method: "GET", path: "/v1/requests?limit=-1", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "limit huge", method: "GET", path: "/v1/requests?limit=99999999999999999999", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "before sql", method: "GET", path: "/v1/requests?before=" + q(sql), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "before non-utf8", method: "GET", path: "/v1/requests?before=%FF", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "status sql", method: "GET", path: "/v1/requests?status=" + q("pending' OR '1'='1"), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "status non-utf8", method: "GET", path: "/v1/requests?status=%FF", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "routing_key sql", method: "GET", path: "/v1/requests?routing_key=" + q(sql), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "routing_key wildcard", method: "GET", path: "/v1/requests?routing_key=" + q("in.*"), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "routing_key like", method: "GET", path: "/v1/requests?routing_key=" + q("in.%"), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "routing_key non-utf8", method: "GET", path: "/v1/requests?routing_key=%FF%FE", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "topic empty word", method: "GET", path: "/v1/events?topic=" + q("a..b"), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "topic mixed wildcard", method: "GET", path: "/v1/events?topic=" + q("a*"), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "topic huge", method: "GET", path: "/v1/events?topic=" + strings.Repeat("a", 10000), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "after sql", method: "GET", path: "/v1/requests/" + id + "/events?after=" + q(sql), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "after negative", method: "GET", path: "/v1/requests/" + id + "/events?after=-5", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "after huge", method: "GET", path: "/v1/requests/" + id + "/events?after=99999999999999999999999", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "dead-letters limit", method: "GET", path: "/v1/dead-letters?limit=" + q(sql), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "dead-letters before", method: "GET", path: "/v1/dead-letters?before=-1", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "audit limit", method: "GET", path: "/v1/audit?limit=99999999999", headers: key, status: 400, kind: "invalid-parameter"},
		{name: "audit before", method: "GET", path: "/v1/audit?before=" + q(sql), headers: key, status: 400, kind: "invalid-parameter"},
		{name: "audit project sql", method: "GET", path: "/v1/audit?project=" + q(sql), headers: operator, status: 404, kind: "not-found"},
		{name: "audit project non-utf8", method: "GET", path: "/v1/audit?project=%FF%FE", headers: operator, status: 404, kind: "not-found"},
		{name: "keys project sql", method: "GET", path: "/v1/admin/keys?project=" + q(sql), headers: operator, status: 404, kind: "not-found"},
		{name: "keys project non-utf8", method: "GET", path: "/v1/admin/keys?project=%FF%FE", headers: operator, status: 404, kind: "not-found"},
		{name: "request id sql", method: "GET", path: "/v1/requests/" + url.PathEscape(sql), headers: key, status: 404, kind: "not-found"},
		{name: "key id sql", method: "DELETE", path: "/v1/admin/keys/" + url.PathEscape(sql), headers: key, status: 404, kind: "not-found"},
		{name: "project name sql", method: "POST", path: "/v1/admin/projects", headers: with(jsonCT, flatten(operator)...),
			body: `{"name": "x'; DROP TABLE requests; --"}`, status: 400, kind: "invalid-parameter"},
		{name: "key scope sql", method: "POST", path: "/v1/admin/keys", headers: with(jsonCT, flatten(operator)...),
			body: `{"name": "x", "scopes": ["write:'; DROP TABLE requests; --"]}`, status: 400, kind: "invalid-parameter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.bug != "" {
				t.Skip("BUG: " + c.bug)
			}
			res := b.secRaw(t, c.method, c.path, c.headers, c.body)
			require.Less(t, res.status, 500, "never a 5xx; body: %s", res.body)
			require.GreaterOrEqual(t, res.status, 400, "body: %s", res.body)
			if c.kind != "" {
				requireProblem(t, res, c.status, c.kind)
			} else {
				require.Equal(t, c.status, res.status, "body: %s", res.body)
				require.Equal(t, "application/problem+json", res.header.Get("Content-Type"))
			}
		})
	}

	// CR/LF and NUL in a header, which Go's client will not send: net/http
	// refuses the request before any handler runs.
	for name, header := range map[string]string{
		"bare CR": "Message-ID: 0190a3c1-0000-7000-8000-000000000000\rInjected: yes",
		"NUL":     "Message-ID: abc\x00def",
	} {
		t.Run("raw "+name, func(t *testing.T) {
			status := b.rawStatus(t, "POST /in/a HTTP/1.1\r\nHost: gateway\r\nAuthorization: "+key["Authorization"]+
				"\r\nContent-Type: application/json\r\n"+header+"\r\nContent-Length: 2\r\n\r\n{}")
			require.Equal(t, 400, status)
		})
	}

	require.Equal(t, before, b.count(t, `SELECT count(*) FROM requests`), "no hostile call made a request")
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM pg_tables WHERE tablename = 'requests'`), "the requests table still exists")
	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+id, key, "").status)
}

// secRaw sends path exactly as written (no cleaning, escapes kept).
func (b *bundle) secRaw(t *testing.T, method, path string, headers map[string]string, body string) response {
	t.Helper()
	u, err := url.Parse(b.url)
	require.NoError(t, err)
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, b.url, rd)
	require.NoError(t, err)
	rawPath, rawQuery, _ := strings.Cut(path, "?")
	req.URL = &url.URL{Scheme: u.Scheme, Host: u.Host, Opaque: rawPath, RawQuery: rawQuery}
	for k, v := range headers {
		req.Header[http.CanonicalHeaderKey(k)] = []string{v}
	}
	res, err := b.http.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		return response{status: res.StatusCode, header: res.Header}
	}
	out, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: out}
}

// rawStatus writes a hand-made request to the test server and returns the
// status of its answer.
func (b *bundle) rawStatus(t *testing.T, request string) int {
	t.Helper()
	u, err := url.Parse(b.url)
	require.NoError(t, err)
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(conn, request)
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer res.Body.Close()
	return res.StatusCode
}

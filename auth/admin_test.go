package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// fakeAuditor keeps the entries it is given.
type fakeAuditor struct {
	mu      sync.Mutex
	entries []AuditEntry
}

func (f *fakeAuditor) Record(_ context.Context, e AuditEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, e)
	return nil
}

// take returns the entries recorded since the last call.
func (f *fakeAuditor) take() []AuditEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.entries
	f.entries = nil
	return out
}

type adminFixture struct {
	t       *testing.T
	store   *Store
	handler http.Handler
	audit   *fakeAuditor
	acme    Project
	other   Project
	// Keys: an operator, acme's admin, a plain acme key, other's admin.
	operator, acmeAdmin, acmePlain, otherAdmin         string
	operatorID, acmeAdminID, acmePlainID, otherAdminID uuid.UUID
}

func newAdminFixture(t *testing.T) *adminFixture {
	s, _ := newKeyStore(t)
	ctx := t.Context()
	f := &adminFixture{t: t, store: s, audit: &fakeAuditor{}}
	var err error
	f.acme, err = s.CreateProject(ctx, "acme")
	require.NoError(t, err)
	f.other, err = s.CreateProject(ctx, "other")
	require.NoError(t, err)
	key := func(project uuid.UUID, name string, scopes ...Scope) (string, uuid.UUID) {
		k, secret, err := s.CreateKey(ctx, NewKey{ProjectID: project, Name: name, Scopes: scopes})
		require.NoError(t, err)
		return secret, k.ID
	}
	f.operator, f.operatorID = key(DefaultProject, "ops", "admin")
	f.acmeAdmin, f.acmeAdminID = key(f.acme.ID, "acme-admin", "admin")
	f.acmePlain, f.acmePlainID = key(f.acme.ID, "acme-plain", "read:#", "submit:#")
	f.otherAdmin, f.otherAdminID = key(f.other.ID, "other-admin", "admin")

	r := chi.NewRouter()
	r.Use(Middleware(MiddlewareConfig{Store: s}))
	r.Route("/v1", func(r chi.Router) { s.Routes(r, f.audit) })
	f.handler = r
	return f
}

// do makes a call with key and returns the status and decoded body.
func (f *adminFixture) do(key, method, path, body string) (int, map[string]any) {
	f.t.Helper()
	var r *http.Request
	if body != "" {
		r = httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
	} else {
		r = httptest.NewRequest(method, path, nil)
	}
	r.Header.Set("Authorization", "Bearer "+key)
	w := httptest.NewRecorder()
	f.handler.ServeHTTP(w, r)
	var out map[string]any
	if w.Body.Len() > 0 {
		require.NoError(f.t, json.Unmarshal(w.Body.Bytes(), &out), w.Body.String())
	}
	if w.Code >= 400 {
		require.Equal(f.t, "application/problem+json", w.Header().Get("Content-Type"))
	}
	return w.Code, out
}

func problemType(body map[string]any) string {
	s, _ := body["type"].(string)
	return strings.TrimPrefix(s, "urn:switchboard:problem:")
}

func names(list any, field string) []string {
	var out []string
	for _, x := range list.([]any) {
		out = append(out, x.(map[string]any)[field].(string))
	}
	return out
}

func TestAdminProjects(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t)

	code, body := f.do(f.operator, "POST", "/v1/admin/projects", `{"name":"new-one"}`)
	require.Equal(t, http.StatusCreated, code, body)
	require.Equal(t, "new-one", body["name"])
	require.Equal(t, []AuditEntry{{ProjectID: DefaultProject, KeyID: f.operatorID, Action: "project.create",
		Target: "new-one", Outcome: "ok", Detail: map[string]any{"project_id": body["id"]}}}, f.audit.take())

	code, body = f.do(f.operator, "POST", "/v1/admin/projects", `{"name":"new-one"}`)
	require.Equal(t, http.StatusConflict, code)
	require.Equal(t, "already-exists", problemType(body))
	require.Equal(t, "error", f.audit.take()[0].Outcome)

	code, body = f.do(f.operator, "POST", "/v1/admin/projects", `{"name":"Bad Name"}`)
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "invalid-parameter", problemType(body))
	f.audit.take()
	for _, bad := range []string{`{"name":`, `{"name":"x","extra":1}`, `{"name":"x"} {}`, `[]`} {
		code, body = f.do(f.operator, "POST", "/v1/admin/projects", bad)
		require.Equal(t, http.StatusBadRequest, code, bad)
		require.Equal(t, "invalid-json", problemType(body), bad)
	}
	code, body = f.do(f.operator, "POST", "/v1/admin/projects", `{"name":"`+strings.Repeat("a", maxAdminBody)+`"}`)
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
	require.Equal(t, "body-too-large", problemType(body))

	// A project admin and a plain key may not create projects.
	for _, key := range []string{f.acmeAdmin, f.acmePlain} {
		code, body = f.do(key, "POST", "/v1/admin/projects", `{"name":"sneaky"}`)
		require.Equal(t, http.StatusForbidden, code)
		require.Equal(t, "forbidden", problemType(body))
	}
	require.Equal(t, []AuditEntry{
		{ProjectID: f.acme.ID, KeyID: f.acmeAdminID, Action: "project.create", Outcome: "denied"},
		{ProjectID: f.acme.ID, KeyID: f.acmePlainID, Action: "project.create", Outcome: "denied"},
	}, f.audit.take())

	code, body = f.do(f.operator, "GET", "/v1/admin/projects", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, []string{"acme", "default", "new-one", "other"}, names(body["projects"], "name"))
	code, body = f.do(f.acmeAdmin, "GET", "/v1/admin/projects", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, []string{"acme"}, names(body["projects"], "name"))
	code, _ = f.do(f.acmePlain, "GET", "/v1/admin/projects", "")
	require.Equal(t, http.StatusForbidden, code)
}

func TestAdminKeys(t *testing.T) {
	t.Parallel()
	f := newAdminFixture(t)
	ctx := t.Context()

	// A project admin creates a key in its own project.
	code, body := f.do(f.acmeAdmin, "POST", "/v1/admin/keys", `{"name":"svc","scopes":["submit:orders.#","read:orders.#"]}`)
	require.Equal(t, http.StatusCreated, code, body)
	secret := body["key"].(string)
	require.Equal(t, "acme", body["project"])
	require.Equal(t, "svc", body["name"])
	require.Equal(t, secret[:10], body["prefix"])
	require.Equal(t, []any{"submit:orders.#", "read:orders.#"}, body["scopes"])
	require.Nil(t, body["expires_at"])
	require.Contains(t, body, "created_at")
	newID := uuid.MustParse(body["id"].(string))
	p, err := f.store.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, f.acme.ID, p.ProjectID)
	require.Equal(t, []AuditEntry{{ProjectID: f.acme.ID, KeyID: f.acmeAdminID, Action: "key.create", Target: newID.String(),
		Outcome: "ok", Detail: map[string]any{"name": "svc", "scopes": []string{"submit:orders.#", "read:orders.#"},
			"project": "acme", "prefix": secret[:10]}}}, f.audit.take())

	// ... naming it works too; naming another project, or none, is 404 alike.
	code, _ = f.do(f.acmeAdmin, "POST", "/v1/admin/keys", `{"project":"acme","name":"svc2","scopes":["read:#"]}`)
	require.Equal(t, http.StatusCreated, code)
	f.audit.take()
	for _, name := range []string{"other", "nonexistent", "default"} {
		code, body = f.do(f.acmeAdmin, "POST", "/v1/admin/keys", `{"project":"`+name+`","name":"x","scopes":["admin"]}`)
		require.Equal(t, http.StatusNotFound, code, name)
		require.Equal(t, "not-found", problemType(body))
		require.Equal(t, "no project has this name", body["detail"])
	}
	denied := f.audit.take()
	require.Len(t, denied, 3)
	for _, e := range denied {
		require.Equal(t, f.acme.ID, e.ProjectID, "a refusal is filed under the caller's project")
		require.Equal(t, "denied", e.Outcome)
	}

	// An operator creates keys in any project, with an expiry.
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	code, body = f.do(f.operator, "POST", "/v1/admin/keys",
		`{"project":"other","name":"ops-made","scopes":["read:#"],"expires_at":"`+exp.Format(time.RFC3339)+`"}`)
	require.Equal(t, http.StatusCreated, code, body)
	require.Equal(t, "other", body["project"])
	require.Equal(t, exp.Format(time.RFC3339), body["expires_at"])
	e := f.audit.take()[0]
	require.Equal(t, f.other.ID, e.ProjectID)
	require.Equal(t, "default", e.Detail["actor_project"])
	code, _ = f.do(f.operator, "POST", "/v1/admin/keys", `{"project":"nonexistent","name":"x","scopes":["admin"]}`)
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, []AuditEntry{{ProjectID: DefaultProject, KeyID: f.operatorID, Action: "key.create", Outcome: "error",
		Detail: map[string]any{"project": "nonexistent"}}}, f.audit.take())

	// A plain key may not.
	code, body = f.do(f.acmePlain, "POST", "/v1/admin/keys", `{"name":"x","scopes":["admin"]}`)
	require.Equal(t, http.StatusForbidden, code)
	require.Equal(t, "forbidden", problemType(body))
	require.Equal(t, []AuditEntry{{ProjectID: f.acme.ID, KeyID: f.acmePlainID, Action: "key.create", Outcome: "denied"}}, f.audit.take())

	// Bad input.
	for _, tc := range []struct{ body, kind string }{
		{`{"name":"x","scopes":["root"]}`, "invalid-parameter"},
		{`{"name":"x","scopes":[]}`, "invalid-parameter"},
		{`{"name":"","scopes":["admin"]}`, "invalid-parameter"},
		{`{"name":"x","scopes":["admin"],"expires_at":"2001-01-01T00:00:00Z"}`, "invalid-parameter"},
		{`{"name":"x","scopes":["admin"],"expires_at":"tomorrow"}`, "invalid-json"},
		{`{"name":"x","scopes":"admin"}`, "invalid-json"},
		{`{"name":"x","scopes":["admin"],"key":"sb_mine"}`, "invalid-json"},
	} {
		code, body = f.do(f.acmeAdmin, "POST", "/v1/admin/keys", tc.body)
		require.Equal(t, http.StatusBadRequest, code, tc.body)
		require.Equal(t, tc.kind, problemType(body), tc.body)
	}
	f.audit.take()

	// Lists: never a secret.
	code, body = f.do(f.acmeAdmin, "GET", "/v1/admin/keys", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, []string{"acme-admin", "acme-plain", "svc", "svc2"}, names(body["keys"], "name"))
	for _, k := range body["keys"].([]any) {
		require.NotContains(t, k, "key")
		require.NotContains(t, k, "hash")
	}
	raw, _ := json.Marshal(body)
	require.NotContains(t, string(raw), secret)
	require.NotContains(t, string(raw), f.acmeAdmin)
	code, _ = f.do(f.acmeAdmin, "GET", "/v1/admin/keys?project=other", "")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = f.do(f.acmePlain, "GET", "/v1/admin/keys", "")
	require.Equal(t, http.StatusForbidden, code)
	code, body = f.do(f.operator, "GET", "/v1/admin/keys", "")
	require.Equal(t, http.StatusOK, code)
	require.Len(t, body["keys"], 7)
	code, body = f.do(f.operator, "GET", "/v1/admin/keys?project=other", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, []string{"other-admin", "ops-made"}, names(body["keys"], "name"))
	code, body = f.do(f.operator, "GET", "/v1/admin/keys?project=", "")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, []string{"ops"}, names(body["keys"], "name"), "an empty project is the caller's")

	// Revocation: a project admin, only in its project; another's key is 404.
	code, body = f.do(f.acmeAdmin, "DELETE", "/v1/admin/keys/"+f.otherAdminID.String(), "")
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, "not-found", problemType(body))
	_, err = f.store.Authenticate(ctx, f.otherAdmin)
	require.NoError(t, err)
	code, _ = f.do(f.acmeAdmin, "DELETE", "/v1/admin/keys/not-a-uuid", "")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = f.do(f.acmePlain, "DELETE", "/v1/admin/keys/"+newID.String(), "")
	require.Equal(t, http.StatusForbidden, code)
	f.audit.take()

	code, body = f.do(f.acmeAdmin, "DELETE", "/v1/admin/keys/"+newID.String(), "")
	require.Equal(t, http.StatusNoContent, code, body)
	_, err = f.store.Authenticate(ctx, secret)
	require.ErrorIs(t, err, ErrUnauthorized)
	require.Equal(t, []AuditEntry{{ProjectID: f.acme.ID, KeyID: f.acmeAdminID, Action: "key.revoke", Target: newID.String(),
		Outcome: "ok", Detail: map[string]any{"prefix": secret[:10]}}}, f.audit.take())

	code, _ = f.do(f.operator, "DELETE", "/v1/admin/keys/"+f.otherAdminID.String(), "")
	require.Equal(t, http.StatusNoContent, code)
	e = f.audit.take()[0]
	require.Equal(t, f.other.ID, e.ProjectID, "filed under the key's project")
	require.Equal(t, f.operatorID, e.KeyID)
	code, _ = f.do(f.otherAdmin, "GET", "/v1/admin/keys", "")
	require.Equal(t, http.StatusUnauthorized, code, "the revoked key no longer works")
}

func TestAdminWithoutMiddleware(t *testing.T) {
	t.Parallel()
	r := chi.NewRouter()
	NewStore(nil, nil).Routes(r, nil)
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/admin/keys", nil))
	require.Equal(t, http.StatusUnauthorized, w.Code)
}

func TestAdminToken(t *testing.T) {
	t.Parallel()
	// A read token is never an admin, even one naming the default project.
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			p := Principal{ProjectID: DefaultProject, Scopes: Scopes{"admin"}, RequestID: uuid.New()}
			next.ServeHTTP(w, req.WithContext(WithPrincipal(req.Context(), p)))
		})
	})
	NewStore(nil, nil).Routes(r, nil)
	for _, c := range []struct{ method, path string }{{"GET", "/admin/keys"}, {"GET", "/admin/projects"},
		{"POST", "/admin/keys"}, {"POST", "/admin/projects"}, {"DELETE", "/admin/keys/" + uuid.NewString()}} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(c.method, c.path, strings.NewReader(`{}`)))
		require.Equal(t, http.StatusForbidden, w.Code, c)
	}
}

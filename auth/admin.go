package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/correlation"
)

// Auditor records user actions in the audit trail.
type Auditor interface {
	Record(ctx context.Context, e AuditEntry) error
}

// AuditEntry is one user action for the audit trail.
type AuditEntry struct {
	// ProjectID is the project the action concerns, when the caller was
	// allowed to act on it; else the caller's own project, so a refused
	// attempt does not show in, or reveal, another project's trail.
	ProjectID uuid.UUID
	// KeyID is the key the action was taken with (never the key); uuid.Nil
	// when none.
	KeyID uuid.UUID
	// Action is e.g. key.create, key.revoke, project.create.
	Action string
	// Target names what was acted on (a key id, a project name).
	Target string
	// Outcome is ok, denied or error.
	Outcome string
	// Detail is more about the action; never secrets.
	Detail map[string]any
}

// Audit actions and outcomes of the admin API.
const (
	ActionProjectCreate = "project.create"
	ActionKeyCreate     = "key.create"
	ActionKeyRevoke     = "key.revoke"

	OutcomeOK     = "ok"
	OutcomeDenied = "denied"
	OutcomeError  = "error"
)

// maxAdminBody bounds an admin request's body.
const maxAdminBody = 64 << 10

// Routes adds the admin API to m (mounted under /v1), behind Middleware:
//
//	POST   /admin/projects     create a project (operators)
//	GET    /admin/projects     list projects (operators: all; a project admin: its own)
//	POST   /admin/keys         create a key; the answer is the only time its secret is shown
//	GET    /admin/keys         list keys, without secrets (?project=NAME)
//	DELETE /admin/keys/{id}    revoke a key
//
// Creations and revocations are recorded with audit when it is not nil.
func (s *Store) Routes(m chi.Router, audit Auditor) {
	a := &admin{store: s, audit: audit}
	m.Post("/admin/projects", a.createProject)
	m.Get("/admin/projects", a.listProjects)
	m.Post("/admin/keys", a.createKey)
	m.Get("/admin/keys", a.listKeys)
	m.Delete("/admin/keys/{id}", a.revokeKey)
}

type admin struct {
	store *Store
	audit Auditor
}

type projectJSON struct {
	ID         uuid.UUID `json:"id"`
	Name       string    `json:"name"`
	RateRPS    *float64  `json:"rate_rps"`
	RateBurst  *int      `json:"rate_burst"`
	MaxWaiters *int      `json:"max_waiters"`
	CreatedAt  time.Time `json:"created_at"`
}

func toProjectJSON(p Project) projectJSON {
	return projectJSON(p)
}

type keyJSON struct {
	ID         uuid.UUID  `json:"id"`
	Project    string     `json:"project"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	// Key is the secret, in the answer to its creation only.
	Key string `json:"key,omitempty"`
}

func toKeyJSON(k Key) keyJSON {
	return keyJSON{ID: k.ID, Project: k.ProjectName, Name: k.Name, Prefix: k.Prefix, Scopes: k.Scopes.Strings(),
		CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt}
}

// principal returns the caller, or answers 401 when the Middleware did not
// run (a wiring mistake must not open the admin API).
func principal(w http.ResponseWriter, r *http.Request) (Principal, bool) {
	p, ok := FromContext(r.Context())
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="switchboard"`)
		writeProblem(w, newProblem(http.StatusUnauthorized, "unauthorized", "Unauthorized", errNoCredentials.detail))
	}
	return p, ok
}

// isAdmin reports whether p manages keys of its project (or, as an
// operator, of all). A read token never does.
func isAdmin(p Principal) bool {
	return p.Operator() || (p.RequestID == uuid.Nil && p.Scopes.IsAdmin())
}

func (a *admin) record(r *http.Request, e AuditEntry) {
	if a.audit == nil {
		return
	}
	// The action happened (or was refused) whether or not the caller is
	// still there to hear about it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := a.audit.Record(ctx, e); err != nil {
		a.store.logger.Error("record audit entry", "action", e.Action, "outcome", e.Outcome, "error", err)
	}
}

func entry(p Principal, action, target, outcome string, detail map[string]any) AuditEntry {
	return AuditEntry{ProjectID: p.ProjectID, KeyID: p.KeyID, Action: action, Target: target, Outcome: outcome, Detail: detail}
}

func errForbiddenAdmin() problem {
	return newProblem(http.StatusForbidden, "forbidden", "Forbidden",
		"this call needs a key with the admin scope (of the default project, for operators' calls)")
}

func errBadParameter(detail string) problem {
	return newProblem(http.StatusBadRequest, "invalid-parameter", "Invalid parameter", detail)
}

func errUnknownProject() problem {
	return newProblem(http.StatusNotFound, "not-found", "Not found", "no project has this name")
}

// writeStoreError answers a Store error that is not the caller's to fix.
func (a *admin) writeStoreError(w http.ResponseWriter, err error) {
	if errors.Is(err, correlation.ErrUnavailable) {
		w.Header().Set("Retry-After", "5")
		writeProblem(w, newProblem(http.StatusServiceUnavailable, "unavailable", "Service unavailable",
			"the key store cannot be reached; try again later"))
		return
	}
	a.store.logger.Error("admin api", "error", err)
	writeProblem(w, newProblem(http.StatusInternalServerError, "internal", "Internal error",
		"the gateway failed to handle the request"))
}

// decodeBody reads a small JSON object into v, refusing unknown fields.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("the body holds more than one JSON value")
	}
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeProblem(w, newProblem(http.StatusRequestEntityTooLarge, "body-too-large", "Body too large",
				fmt.Sprintf("the body is larger than the limit of %d bytes", maxAdminBody)))
			return false
		}
		writeProblem(w, newProblem(http.StatusBadRequest, "invalid-json", "Invalid JSON body", err.Error()))
		return false
	}
	return true
}

// createProject handles POST /admin/projects.
func (a *admin) createProject(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	var body struct {
		Name string `json:"name"`
	}
	if !p.Operator() {
		a.record(r, entry(p, ActionProjectCreate, "", OutcomeDenied, nil))
		writeProblem(w, newProblem(http.StatusForbidden, "forbidden", "Forbidden",
			"only operators (admin keys of the default project) create projects"))
		return
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if err := ValidProjectName(body.Name); err != nil {
		a.record(r, entry(p, ActionProjectCreate, "", OutcomeError, map[string]any{"reason": "invalid name"}))
		writeProblem(w, errBadParameter("name: want 1 to 63 lowercase letters, digits and dashes, not starting with a dash"))
		return
	}
	proj, err := a.store.CreateProject(r.Context(), body.Name)
	switch {
	case errors.Is(err, ErrExists):
		a.record(r, entry(p, ActionProjectCreate, body.Name, OutcomeError, map[string]any{"reason": "already exists"}))
		writeProblem(w, newProblem(http.StatusConflict, "already-exists", "Already exists",
			"a project named "+body.Name+" exists"))
	case err != nil:
		a.record(r, entry(p, ActionProjectCreate, body.Name, OutcomeError, nil))
		a.writeStoreError(w, err)
	default:
		e := entry(p, ActionProjectCreate, proj.Name, OutcomeOK, map[string]any{"project_id": proj.ID.String()})
		a.record(r, e)
		writeJSON(w, http.StatusCreated, toProjectJSON(proj))
	}
}

// listProjects handles GET /admin/projects.
func (a *admin) listProjects(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	var out []Project
	var err error
	switch {
	case p.Operator():
		out, err = a.store.Projects(r.Context())
	case isAdmin(p):
		var one Project
		one, err = a.store.Project(r.Context(), p.ProjectID)
		out = []Project{one}
	default:
		writeProblem(w, errForbiddenAdmin())
		return
	}
	if err != nil {
		a.writeStoreError(w, err)
		return
	}
	list := make([]projectJSON, len(out))
	for i, proj := range out {
		list[i] = toProjectJSON(proj)
	}
	writeJSON(w, http.StatusOK, map[string]any{"projects": list})
}

// targetProject resolves the project a call names (empty: the caller's).
// A project admin naming another project learns nothing of it: 404, as if
// it did not exist.
func (a *admin) targetProject(r *http.Request, p Principal, name string) (uuid.UUID, string, *problem, error) {
	if name == "" || name == p.ProjectName {
		return p.ProjectID, p.ProjectName, nil, nil
	}
	if !p.Operator() {
		e := errUnknownProject()
		return uuid.Nil, "", &e, nil
	}
	proj, err := a.store.ProjectByName(r.Context(), name)
	if errors.Is(err, ErrNotFound) {
		e := errUnknownProject()
		return uuid.Nil, "", &e, nil
	}
	if err != nil {
		return uuid.Nil, "", nil, err
	}
	return proj.ID, proj.Name, nil, nil
}

// createKey handles POST /admin/keys.
func (a *admin) createKey(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	if !isAdmin(p) {
		a.record(r, entry(p, ActionKeyCreate, "", OutcomeDenied, nil))
		writeProblem(w, errForbiddenAdmin())
		return
	}
	var body struct {
		Project   string     `json:"project"`
		Name      string     `json:"name"`
		Scopes    []string   `json:"scopes"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	scopes, err := ParseScopes(body.Scopes)
	if err != nil {
		a.record(r, entry(p, ActionKeyCreate, "", OutcomeError, map[string]any{"reason": "invalid scopes"}))
		writeProblem(w, errBadParameter("scopes: "+err.Error()))
		return
	}
	projectID, projectName, prob, err := a.targetProject(r, p, body.Project)
	if err != nil {
		a.writeStoreError(w, err)
		return
	}
	if prob != nil {
		outcome := OutcomeDenied // a project admin naming another project
		if p.Operator() {
			outcome = OutcomeError // no such project
		}
		a.record(r, entry(p, ActionKeyCreate, "", outcome, map[string]any{"project": body.Project}))
		writeProblem(w, *prob)
		return
	}
	detail := map[string]any{"name": body.Name, "scopes": scopes.Strings(), "project": projectName}
	if body.ExpiresAt != nil {
		detail["expires_at"] = body.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if p.ProjectID != projectID {
		detail["actor_project"] = p.ProjectName
	}
	e := AuditEntry{ProjectID: projectID, KeyID: p.KeyID, Action: ActionKeyCreate, Detail: detail}
	k, secret, err := a.store.CreateKey(r.Context(), NewKey{ProjectID: projectID, Name: body.Name, Scopes: scopes, ExpiresAt: body.ExpiresAt})
	switch {
	case errors.Is(err, ErrInvalid):
		e.Outcome, detail["reason"] = OutcomeError, "invalid"
		a.record(r, e)
		writeProblem(w, errBadParameter(strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": ")))
	case errors.Is(err, ErrNotFound): // the project went away meanwhile
		e.Outcome, detail["reason"] = OutcomeError, "no project"
		a.record(r, e)
		writeProblem(w, errUnknownProject())
	case err != nil:
		e.Outcome = OutcomeError
		a.record(r, e)
		a.writeStoreError(w, err)
	default:
		e.Outcome, e.Target = OutcomeOK, k.ID.String()
		detail["prefix"] = k.Prefix
		a.record(r, e)
		out := toKeyJSON(k)
		out.Key = secret
		writeJSON(w, http.StatusCreated, out)
	}
}

// listKeys handles GET /admin/keys.
func (a *admin) listKeys(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	if !isAdmin(p) {
		writeProblem(w, errForbiddenAdmin())
		return
	}
	q := r.URL.Query()
	name := q.Get("project")
	all := p.Operator() && !q.Has("project")
	projectID := p.ProjectID
	if !all {
		id, _, prob, err := a.targetProject(r, p, name)
		if err != nil {
			a.writeStoreError(w, err)
			return
		}
		if prob != nil {
			writeProblem(w, *prob)
			return
		}
		projectID = id
	}
	keys, err := a.store.Keys(r.Context(), projectID, all)
	if err != nil {
		a.writeStoreError(w, err)
		return
	}
	list := make([]keyJSON, len(keys))
	for i, k := range keys {
		list[i] = toKeyJSON(k)
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": list})
}

// revokeKey handles DELETE /admin/keys/{id}.
func (a *admin) revokeKey(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	raw := chi.URLParam(r, "id")
	if !isAdmin(p) {
		a.record(r, entry(p, ActionKeyRevoke, raw, OutcomeDenied, nil))
		writeProblem(w, errForbiddenAdmin())
		return
	}
	notFound := newProblem(http.StatusNotFound, "not-found", "Not found", "no key has this id")
	id, err := uuid.Parse(raw)
	if err != nil || len(raw) != 36 {
		writeProblem(w, notFound)
		return
	}
	err = a.store.RevokeKey(r.Context(), p.ProjectID, id, p.Operator())
	switch {
	case errors.Is(err, ErrNotFound):
		a.record(r, entry(p, ActionKeyRevoke, id.String(), OutcomeError, map[string]any{"reason": "not found"}))
		writeProblem(w, notFound)
	case err != nil:
		a.record(r, entry(p, ActionKeyRevoke, id.String(), OutcomeError, nil))
		a.writeStoreError(w, err)
	default:
		a.record(r, a.revokedEntry(r.Context(), p, id))
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	}
}

// revokedEntry files a revocation under the project of the key revoked.
func (a *admin) revokedEntry(ctx context.Context, p Principal, id uuid.UUID) AuditEntry {
	e := entry(p, ActionKeyRevoke, id.String(), OutcomeOK, nil)
	var projectID uuid.UUID
	var prefix string
	if err := a.store.pool.QueryRow(ctx, `SELECT project_id, prefix FROM api_keys WHERE id = $1`, id).
		Scan(&projectID, &prefix); err == nil {
		e.ProjectID = projectID
		e.Detail = map[string]any{"prefix": prefix}
	}
	return e
}

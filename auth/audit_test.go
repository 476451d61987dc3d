package auth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/auth"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

func newAudit(t *testing.T) (*pgxpool.Pool, *auth.Audit) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testsvc.Database(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool, auth.NewAudit(pool)
}

func addProject(t *testing.T, pool *pgxpool.Pool, name string) uuid.UUID {
	t.Helper()
	id := uuid.New()
	_, err := pool.Exec(context.Background(), `INSERT INTO projects (id, name) VALUES ($1, $2)`, id, name)
	require.NoError(t, err)
	return id
}

// addSubmit stores a request row as a submit would, at the given time.
func addSubmit(t *testing.T, pool *pgxpool.Pool, project uuid.UUID, key *uuid.UUID, at time.Time) uuid.UUID {
	t.Helper()
	id := uuid.New()
	_, err := pool.Exec(context.Background(), `INSERT INTO requests
		(id, routing_key, time_ms, expires_at, body, body_sha256, project_id, key_id, created_at, next_attempt_at)
		VALUES ($1, 'a.b', 1, now() + interval '1 hour', '{}', '\x00', $2, $3, $4, now() + interval '1 hour')`,
		id, project, key, at)
	require.NoError(t, err)
	return id
}

func addAudit(t *testing.T, pool *pgxpool.Pool, project uuid.UUID, action string, at time.Time) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO audit_log (project_id, action, target, outcome, at)
		VALUES ($1, $2, 't', 'ok', $3)`, project, action, at)
	require.NoError(t, err)
}

type cloudEvent struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Subject         string `json:"subject"`
	CorrelationID   string `json:"correlationid"`
	Data            struct {
		Project uuid.UUID      `json:"project"`
		KeyID   *uuid.UUID     `json:"key_id"`
		Action  string         `json:"action"`
		Target  string         `json:"target"`
		Outcome string         `json:"outcome"`
		Detail  map[string]any `json:"detail"`
	} `json:"data"`
}

func auditEvents(t *testing.T, pool *pgxpool.Pool) (keys []string, evs []cloudEvent) {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT routing_key, body FROM event_outbox WHERE routing_key LIKE 'audit.%' ORDER BY id`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var key string
		var body []byte
		require.NoError(t, rows.Scan(&key, &body))
		var ev cloudEvent
		require.NoError(t, json.Unmarshal(body, &ev))
		keys = append(keys, key)
		evs = append(evs, ev)
	}
	require.NoError(t, rows.Err())
	return keys, evs
}

func TestRecordStoresAndPublishes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, audit := newAudit(t)
	project := addProject(t, pool, "acme")
	key := uuid.New()
	before := time.Now()
	require.NoError(t, audit.Record(ctx, auth.AuditEntry{ProjectID: project, KeyID: key, Action: auth.ActionKeyCreate,
		Target: "k1", Outcome: auth.OutcomeOK, Detail: map[string]any{
			"name": "ci", "scopes": []string{"read:#"}, "key": "sb_secret", "Token": "x",
			"nested": map[string]any{"password": "p", "ok": 1, "leaked": "sbt_abc.def"},
			"list":   []any{"Bearer xyz", "fine"},
		}}))
	require.NoError(t, audit.Record(ctx, auth.AuditEntry{ProjectID: project, Action: "rules.reload", Outcome: auth.OutcomeError}))

	keys, evs := auditEvents(t, pool)
	require.Equal(t, []string{"audit.key.create", "audit.rules.reload"}, keys)
	ev := evs[0]
	require.Equal(t, "1.0", ev.SpecVersion)
	require.NoError(t, uuid.Validate(ev.ID))
	require.NotEqual(t, ev.ID, evs[1].ID)
	require.Equal(t, "switchboard", ev.Source)
	require.Equal(t, "audit.key.create", ev.Type)
	require.Equal(t, "application/json", ev.DataContentType)
	require.Empty(t, ev.Subject, "a subject naming a request would file the event under it")
	require.Empty(t, ev.CorrelationID)
	at, err := time.Parse(time.RFC3339Nano, ev.Time)
	require.NoError(t, err)
	require.WithinDuration(t, before, at, time.Minute)
	require.Equal(t, project, ev.Data.Project)
	require.Equal(t, &key, ev.Data.KeyID)
	require.Equal(t, "key.create", ev.Data.Action)
	require.Equal(t, "k1", ev.Data.Target)
	require.Equal(t, "ok", ev.Data.Outcome)
	wantDetail := map[string]any{"name": "ci", "scopes": []any{"read:#"}, "key": "[redacted]", "Token": "[redacted]",
		"nested": map[string]any{"password": "[redacted]", "ok": float64(1), "leaked": "[redacted]"},
		"list":   []any{"[redacted]", "fine"}}
	require.Equal(t, wantDetail, ev.Data.Detail)
	require.Nil(t, evs[1].Data.KeyID, "no key: null")
	require.Equal(t, map[string]any{}, evs[1].Data.Detail)

	list, err := audit.List(ctx, &project, 0, 10)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, "rules.reload", list[0].Action)
	require.Nil(t, list[0].KeyID)
	require.Equal(t, "error", list[0].Outcome)
	require.Equal(t, "key.create", list[1].Action)
	require.Equal(t, &key, list[1].KeyID)
	require.Equal(t, wantDetail, list[1].Detail, "the stored detail is the redacted one")
}

func TestRecordRefusesBadEntries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, audit := newAudit(t)
	for _, e := range []auth.AuditEntry{
		{Action: "", Outcome: "ok"},
		{Action: "key.#", Outcome: "ok"},
		{Action: "key..create", Outcome: "ok"},
		{Action: "Key Create", Outcome: "ok"},
		{Action: "key.create"},
	} {
		require.Error(t, audit.Record(ctx, e), "%+v", e)
	}
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM audit_log) + (SELECT count(*) FROM event_outbox WHERE routing_key LIKE 'audit.%')`).Scan(&n))
	require.Zero(t, n)
}

// The trail interleaves audit_log entries and submits by time, filters by
// project, and pages with a cursor that never skips nor repeats an entry,
// even when entries share a timestamp.
func TestListMergesSubmitsAndPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, audit := newAudit(t)
	a, b := addProject(t, pool, "a"), addProject(t, pool, "b")
	key := uuid.New()
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	addAudit(t, pool, a, "key.create", base)
	submit1 := addSubmit(t, pool, a, &key, base.Add(time.Second))
	addAudit(t, pool, b, "key.create", base.Add(2*time.Second))
	// Five entries in one microsecond: a page must not split them.
	tie := base.Add(3 * time.Second)
	for range 3 {
		addAudit(t, pool, a, "key.revoke", tie)
	}
	addSubmit(t, pool, a, nil, tie)
	addSubmit(t, pool, a, nil, tie)
	addAudit(t, pool, a, "rules.reload", base.Add(4*time.Second))

	all, err := audit.List(ctx, &a, 0, 100)
	require.NoError(t, err)
	require.Len(t, all, 8)
	for i := 1; i < len(all); i++ {
		require.False(t, all[i].At.After(all[i-1].At), "newest first")
		require.Equal(t, a, all[i].ProjectID)
	}
	require.Equal(t, "rules.reload", all[0].Action)
	last := all[len(all)-1]
	require.Equal(t, "key.create", last.Action)
	s := all[len(all)-2]
	require.Equal(t, auth.SubmitAction, s.Action)
	require.Equal(t, submit1.String(), s.Target)
	require.Equal(t, "ok", s.Outcome)
	require.Equal(t, &key, s.KeyID)
	require.Equal(t, map[string]any{}, s.Detail)

	everyone, err := audit.List(ctx, nil, 0, 100)
	require.NoError(t, err)
	require.Len(t, everyone, 9, "nil: every project")

	for _, limit := range []int{1, 2, 3, 4, 7} {
		var paged []auth.AuditRecord
		var cursor int64
		for pages := 0; ; pages++ {
			require.Less(t, pages, 20)
			page, err := audit.List(ctx, &a, cursor, limit)
			require.NoError(t, err)
			paged = append(paged, page...)
			if len(page) < limit {
				break
			}
			cursor = page[len(page)-1].At.UnixMicro()
		}
		require.Equal(t, all, paged, "limit %d", limit)
	}

	page, err := audit.List(ctx, &a, 0, 2)
	require.NoError(t, err)
	require.Len(t, page, 6, "the tie group comes whole")

	_, err = audit.List(ctx, &a, 0, 0)
	require.Error(t, err)
}

func TestAuditRoute(t *testing.T) {
	t.Parallel()
	pool, audit := newAudit(t)
	acme, other := addProject(t, pool, "acme"), addProject(t, pool, "other")
	now := time.Now()
	addAudit(t, pool, acme, "key.create", now)
	addAudit(t, pool, other, "key.create", now)
	addAudit(t, pool, auth.DefaultProject, "project.create", now)
	addSubmit(t, pool, acme, nil, now)

	operator := auth.Principal{ProjectID: auth.DefaultProject, ProjectName: "default", KeyID: uuid.New(), Scopes: auth.Scopes{auth.ScopeAdmin}}
	acmeAdmin := auth.Principal{ProjectID: acme, ProjectName: "acme", KeyID: uuid.New(), Scopes: auth.Scopes{auth.ScopeAdmin}}
	acmeReader := auth.Principal{ProjectID: acme, ProjectName: "acme", KeyID: uuid.New(), Scopes: auth.Scopes{"read:#", "submit:#"}}
	token := auth.Principal{ProjectID: acme, RequestID: uuid.New(), Scopes: auth.Scopes{"read:#"}}
	defaultReader := auth.Principal{ProjectID: auth.DefaultProject, ProjectName: "default", KeyID: uuid.New(), Scopes: auth.Scopes{"read:#"}}

	serve := func(p *auth.Principal, query string) *httptest.ResponseRecorder {
		r := chi.NewRouter()
		if p != nil {
			r.Use(func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					next.ServeHTTP(w, req.WithContext(auth.WithPrincipal(req.Context(), *p)))
				})
			})
		}
		audit.Routes(r)
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/audit"+query, nil))
		return w
	}
	type page struct {
		Entries []struct {
			Project uuid.UUID `json:"project"`
			Action  string    `json:"action"`
		} `json:"entries"`
		NextBefore int64 `json:"next_before"`
	}
	projects := func(w *httptest.ResponseRecorder) map[uuid.UUID]int {
		t.Helper()
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		require.Equal(t, "application/json", w.Header().Get("Content-Type"))
		var pg page
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &pg))
		out := map[uuid.UUID]int{}
		for _, e := range pg.Entries {
			out[e.Project]++
		}
		return out
	}
	insecure := auth.InsecurePrincipal()

	require.Equal(t, map[uuid.UUID]int{acme: 2, other: 1, auth.DefaultProject: 1}, projects(serve(&operator, "")))
	require.Equal(t, map[uuid.UUID]int{acme: 2, other: 1, auth.DefaultProject: 1}, projects(serve(&insecure, "")))
	require.Equal(t, map[uuid.UUID]int{other: 1}, projects(serve(&operator, "?project=other")))
	require.Equal(t, map[uuid.UUID]int{other: 1}, projects(serve(&operator, "?project="+other.String())))
	require.Equal(t, map[uuid.UUID]int{acme: 2}, projects(serve(&acmeAdmin, "")))
	require.Equal(t, map[uuid.UUID]int{acme: 2}, projects(serve(&acmeAdmin, "?project=acme")))
	require.Equal(t, map[uuid.UUID]int{acme: 2}, projects(serve(&acmeAdmin, "?project="+acme.String())))

	w := serve(&operator, "?limit=1")
	var pg page
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &pg))
	require.NotZero(t, pg.NextBefore)
	w = serve(&operator, "?limit=100&before="+strconv.FormatInt(pg.NextBefore, 10))
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &pg))
	require.Zero(t, pg.NextBefore, "the last page")

	problem := func(w *httptest.ResponseRecorder, status int, kind string) {
		t.Helper()
		require.Equal(t, status, w.Code, w.Body.String())
		require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
		var p struct {
			Type   string `json:"type"`
			Status int    `json:"status"`
		}
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
		require.Equal(t, "urn:switchboard:problem:"+kind, p.Type)
		require.Equal(t, status, p.Status)
		require.NotContains(t, w.Body.String(), other.String())
		require.NotContains(t, w.Body.String(), "key.create")
	}
	problem(serve(&acmeAdmin, "?project=other"), http.StatusForbidden, "forbidden")
	problem(serve(&acmeAdmin, "?project="+other.String()), http.StatusForbidden, "forbidden")
	problem(serve(&acmeAdmin, "?project=nosuch"), http.StatusForbidden, "forbidden")
	problem(serve(&acmeReader, ""), http.StatusForbidden, "forbidden")
	problem(serve(&token, ""), http.StatusForbidden, "forbidden")
	problem(serve(&defaultReader, ""), http.StatusForbidden, "forbidden")
	problem(serve(nil, ""), http.StatusUnauthorized, "unauthorized")
	problem(serve(&operator, "?project=nosuch"), http.StatusNotFound, "not-found")
	problem(serve(&operator, "?project='%20OR%201=1--"), http.StatusNotFound, "not-found")
	for _, q := range []string{"?limit=0", "?limit=501", "?limit=x", "?before=-1", "?before=x", "?before=0"} {
		problem(serve(&operator, q), http.StatusBadRequest, "invalid-parameter")
	}
}

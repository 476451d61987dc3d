package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-gw/switchboard/correlation"
)

// The audit trail: every user action, with its project, key id (never the
// key), time and outcome. Actions other than submits are rows of audit_log,
// each published as a CloudEvent (routing key audit.<action>) through the
// event outbox in the same transaction, so an action is recorded and
// announced or neither. A submit is its requests row, which already holds
// project, key and time; List shows both as one trail. Submits leave the
// trail when the retention sweep removes their requests.

// SubmitAction is the action under which List shows a submitted request.
const SubmitAction = "request.submit"

// Audit records user actions and lists them. It is safe for concurrent use.
type Audit struct {
	pool *pgxpool.Pool
}

// NewAudit returns an Audit keeping its trail in pool's database.
func NewAudit(pool *pgxpool.Pool) *Audit { return &Audit{pool: pool} }

// AuditRecord is one entry of the trail as List returns it.
type AuditRecord struct {
	At        time.Time `json:"at"`
	ProjectID uuid.UUID `json:"project"`
	// KeyID is the key the action was taken with; nil when none (no auth,
	// or a rule).
	KeyID   *uuid.UUID     `json:"key_id"`
	Action  string         `json:"action"`
	Target  string         `json:"target"`
	Outcome string         `json:"outcome"`
	Detail  map[string]any `json:"detail"`
}

// actionPattern keeps an action fit to be words of a routing key.
var actionPattern = regexp.MustCompile(`^[a-z0-9_-]+(\.[a-z0-9_-]+)*$`)

// Record adds e to the trail and, in the same transaction, puts its
// CloudEvent in the event outbox. Detail must not hold secrets; as a safety
// net, values under secret-sounding names (key, token, secret, password,
// authorization...) and strings that look like a key or a read token are
// replaced by "[redacted]".
func (a *Audit) Record(ctx context.Context, e AuditEntry) error {
	if !actionPattern.MatchString(e.Action) || len(e.Action) > 200 {
		return fmt.Errorf("record audit entry: invalid action %q", e.Action)
	}
	if e.Outcome == "" {
		return fmt.Errorf("record audit entry %s: no outcome", e.Action)
	}
	detail := redact(e.Detail)
	if detail == nil {
		detail = map[string]any{}
	}
	detailJSON, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("record audit entry %s: encode detail: %w", e.Action, err)
	}
	var keyID *uuid.UUID
	if e.KeyID != uuid.Nil {
		keyID = &e.KeyID
	}

	err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		var at time.Time
		if err := tx.QueryRow(ctx, `INSERT INTO audit_log (project_id, key_id, action, target, outcome, detail)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING at`,
			e.ProjectID, keyID, e.Action, e.Target, e.Outcome, detailJSON).Scan(&at); err != nil {
			return err
		}
		// No subject and no correlationid: the event consumer would file an
		// event naming a request under that request's history.
		body, err := json.Marshal(auditEvent{
			SpecVersion: "1.0", ID: uuid.NewString(), Source: "switchboard", Type: "audit." + e.Action,
			Time: at.UTC().Format(time.RFC3339Nano), DataContentType: "application/json",
			Data: auditEventData{Project: e.ProjectID, KeyID: keyID, Action: e.Action, Target: e.Target,
				Outcome: e.Outcome, Detail: detailJSON},
		})
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO event_outbox (routing_key, body) VALUES ($1, $2)`, "audit."+e.Action, body)
		return err
	})
	if err != nil {
		return correlation.DBError("record audit entry", err)
	}
	return nil
}

type auditEvent struct {
	SpecVersion     string         `json:"specversion"`
	ID              string         `json:"id"`
	Source          string         `json:"source"`
	Type            string         `json:"type"`
	Time            string         `json:"time"`
	DataContentType string         `json:"datacontenttype"`
	Data            auditEventData `json:"data"`
}

type auditEventData struct {
	Project uuid.UUID       `json:"project"`
	KeyID   *uuid.UUID      `json:"key_id"`
	Action  string          `json:"action"`
	Target  string          `json:"target"`
	Outcome string          `json:"outcome"`
	Detail  json.RawMessage `json:"detail"`
}

// secretNames are detail keys whose values are never kept.
var secretNames = []string{"key", "api_key", "apikey", "secret", "token", "access_token", "password", "authorization", "credential"}

// redact returns a copy of d without secrets, nested maps included.
func redact(d map[string]any) map[string]any {
	if d == nil {
		return nil
	}
	out := make(map[string]any, len(d))
	for k, v := range d {
		switch {
		case isSecretName(k):
			out[k] = "[redacted]"
		default:
			out[k] = redactValue(v)
		}
	}
	return out
}

func redactValue(v any) any {
	switch v := v.(type) {
	case string:
		if strings.HasPrefix(v, keyPrefix) || strings.HasPrefix(v, TokenPrefix) || strings.HasPrefix(strings.ToLower(v), "bearer ") {
			return "[redacted]"
		}
		return v
	case map[string]any:
		return redact(v)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = redactValue(x)
		}
		return out
	case []string:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = redactValue(x)
		}
		return out
	}
	return v
}

func isSecretName(k string) bool {
	k = strings.ToLower(k)
	for _, s := range secretNames {
		if k == s {
			return true
		}
	}
	return false
}

// List returns a page of the trail, newest first: audit_log entries and
// submits together, ordered by time, then kind, then id. project nil lists
// every project. before is a cursor in unix microseconds (0: from the
// newest): only entries strictly older are listed, and the next page's
// cursor is the last entry's At.UnixMicro(). So that cursor never skips an
// entry, a page never splits the entries of one microsecond: it may hold
// more than limit of them. A page shorter than limit is the last.
func (a *Audit) List(ctx context.Context, project *uuid.UUID, before int64, limit int) ([]AuditRecord, error) {
	if limit < 1 {
		return nil, fmt.Errorf("list audit trail: limit %d is below 1", limit)
	}
	var cutoff *time.Time
	if before > 0 {
		t := time.UnixMicro(before)
		cutoff = &t
	}
	page, err := a.query(ctx, "<", project, cutoff, limit+1)
	if err != nil {
		return nil, correlation.DBError("list audit trail", err)
	}
	if len(page) <= limit {
		return page, nil
	}
	last := page[limit-1].At
	if !page[limit].At.Equal(last) {
		return page[:limit], nil
	}
	// The page would end inside one microsecond: take all of it.
	ties, err := a.query(ctx, "=", project, &last, 0)
	if err != nil {
		return nil, correlation.DBError("list audit trail", err)
	}
	out := page[:0]
	for _, r := range page {
		if r.At.After(last) {
			out = append(out, r)
		}
	}
	return append(out, ties...), nil
}

// query lists the trail with at <op> cutoff (every entry when cutoff is nil
// and op is "<"), newest first, at most limit (0: all).
func (a *Audit) query(ctx context.Context, op string, project *uuid.UUID, cutoff *time.Time, limit int) ([]AuditRecord, error) {
	if op != "<" && op != "=" {
		panic("audit query: bad operator " + op)
	}
	q := `SELECT at, project_id, key_id, action, target, outcome, detail FROM (
		SELECT at, 0 AS kind, lpad(id::text, 20, '0') AS id, project_id, key_id, action, target, outcome, detail
		FROM audit_log WHERE ($1::uuid IS NULL OR project_id = $1) AND ($2::timestamptz IS NULL OR at ` + op + ` $2)
		UNION ALL
		SELECT created_at, 1, id::text, project_id, key_id, '` + SubmitAction + `', id::text, 'ok', '{}'::jsonb
		FROM requests WHERE ($1::uuid IS NULL OR project_id = $1) AND ($2::timestamptz IS NULL OR created_at ` + op + ` $2)
	) trail ORDER BY at DESC, kind DESC, id DESC`
	args := []any{project, cutoff}
	if limit > 0 {
		q += ` LIMIT $3`
		args = append(args, limit)
	}
	rows, err := a.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditRecord, error) {
		var r AuditRecord
		var detail []byte
		if err := row.Scan(&r.At, &r.ProjectID, &r.KeyID, &r.Action, &r.Target, &r.Outcome, &detail); err != nil {
			return r, err
		}
		if err := json.Unmarshal(detail, &r.Detail); err != nil {
			return r, fmt.Errorf("decode detail: %w", err)
		}
		return r, nil
	})
}

// Routes registers GET /audit on m. The lead mounts it under /v1 behind
// the Middleware.
func (a *Audit) Routes(m chi.Router) {
	m.Get("/audit", a.list)
}

// auditPage is the answer of GET /audit.
type auditPage struct {
	Entries []AuditRecord `json:"entries"`
	// NextBefore is the ?before= of the next (older) page; 0 when none.
	NextBefore int64 `json:"next_before"`
}

const (
	auditDefaultLimit = 50
	auditMaxLimit     = 500
)

// list handles GET /audit?project=NAME|ID&before=MICROS&limit=N. An
// operator sees any project (every one without ?project=); the admin of a
// project sees its own. Naming another project is forbidden whether or not
// it exists, so the answer tells nothing about it.
func (a *Audit) list(w http.ResponseWriter, r *http.Request) {
	p, ok := principal(w, r)
	if !ok {
		return
	}
	if !isAdmin(p) {
		writeProblem(w, errForbiddenAdmin())
		return
	}
	q := r.URL.Query()
	limit := auditDefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > auditMaxLimit {
			writeProblem(w, errBadParameter("limit must be a whole number from 1 to "+strconv.Itoa(auditMaxLimit)))
			return
		}
		limit = n
	}
	var before int64
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			writeProblem(w, errBadParameter("before must be the next_before of a previous page, a positive integer"))
			return
		}
		before = n
	}

	var project *uuid.UUID
	switch name := q.Get("project"); {
	case p.Operator() && name != "":
		id, err := a.resolveProject(r.Context(), name)
		if errors.Is(err, ErrNotFound) {
			writeProblem(w, errUnknownProject())
			return
		}
		if err != nil {
			writeAuditError(w, err)
			return
		}
		project = &id
	case p.Operator():
		// Every project.
	case name == "" || name == p.ProjectName || name == p.ProjectID.String():
		project = &p.ProjectID
	default:
		writeProblem(w, newProblem(http.StatusForbidden, "forbidden", "Forbidden",
			"a project admin reads the audit trail of its own project only"))
		return
	}

	list, err := a.List(r.Context(), project, before, limit)
	if err != nil {
		writeAuditError(w, err)
		return
	}
	page := auditPage{Entries: list}
	if page.Entries == nil {
		page.Entries = []AuditRecord{}
	}
	if len(list) >= limit {
		page.NextBefore = list[len(list)-1].At.UnixMicro()
	}
	writeJSON(w, http.StatusOK, page)
}

// resolveProject returns the id of the project named or identified by s,
// or ErrNotFound.
func (a *Audit) resolveProject(ctx context.Context, s string) (uuid.UUID, error) {
	var id uuid.UUID
	var err error
	if u, perr := uuid.Parse(s); perr == nil {
		err = a.pool.QueryRow(ctx, `SELECT id FROM projects WHERE id = $1`, u).Scan(&id)
	} else if ValidProjectName(s) != nil {
		return uuid.Nil, ErrNotFound // no project can have it; Postgres need not see it
	} else {
		err = a.pool.QueryRow(ctx, `SELECT id FROM projects WHERE name = $1`, s).Scan(&id)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return uuid.Nil, ErrNotFound
	case err != nil:
		return uuid.Nil, correlation.DBError("resolve project", err)
	}
	return id, nil
}

// writeAuditError answers a database error.
func writeAuditError(w http.ResponseWriter, err error) {
	if errors.Is(err, correlation.ErrUnavailable) {
		w.Header().Set("Retry-After", "5")
		writeProblem(w, newProblem(http.StatusServiceUnavailable, "unavailable", "Service unavailable",
			"the audit trail cannot be reached; try again later"))
		return
	}
	writeProblem(w, newProblem(http.StatusInternalServerError, "internal", "Internal error",
		"the gateway failed to handle the request"))
}

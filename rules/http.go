package rules

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/httpjson"
)

// MaxHookBody is the largest body POST /hooks/{source} and POST /rules/test
// accept; a larger one is refused (413), never truncated.
const MaxHookBody = 1 << 20

// Bounds of GET /rules/{name}/firings?limit=.
const (
	defaultFiringsLimit = 20
	maxFiringsLimit     = 500
)

// FiringReader reads recent firings (*PGFirings has it).
type FiringReader interface {
	Recent(ctx context.Context, rule string, limit int) ([]Firing, error)
}

// Handler serves the rule engine's HTTP API, with paths relative to /v1
// (mount it with http.StripPrefix("/v1", ...), or register the routes on
// the /v1 router with Routes):
//
//	POST /hooks/{source}          an event for a webhook source; 202 once decided
//	GET  /rules                   the loaded rules with their counts, files and reload state
//	GET  /rules/{name}/firings    recent firings of a rule, newest first (?limit=, default 20, at most 500)
//	POST /rules/test              dry run: which rules an event matches and what they would send
//
// Errors are application/problem+json, with the API's problem types.
func (r *Runner) Handler() http.Handler {
	m := chi.NewRouter()
	r.Routes(m)
	return m
}

// Routes registers the rule engine's routes on m (the /v1 router).
func (r *Runner) Routes(m chi.Router) {
	m.Post("/hooks/{source}", r.serveHook)
	m.Get("/rules", r.serveRules)
	m.Post("/rules/test", r.serveTest)
	m.Get("/rules/{name}/firings", r.serveFirings)
}

// serveHook turns a JSON POST into an event of the webhook source named in
// the path. It answers 202 only after the engine has decided the event, so
// a sender that retries on anything else, with the same Idempotency-Key,
// loses nothing and duplicates nothing downstream (the outputs' ids derive
// from the event id).
func (r *Runner) serveHook(w http.ResponseWriter, req *http.Request) {
	name := chi.URLParam(req, "source")
	hook, ok := r.Hook(name)
	if !ok {
		writeProblem(w, notFound("no webhook source is named "+strconv.Quote(name)))
		return
	}
	body, p := readJSON(w, req)
	if p != nil {
		writeProblem(w, p)
		return
	}
	ev := hookEvent(name, req, body)
	// The sender hanging up does not abandon an event half acted on.
	if err := hook.Deliver(context.WithoutCancel(req.Context()), ev); err != nil {
		r.logger.Warn("webhook event not decided", "rule_source", name, "event_id", ev.ID, "error", err)
		p := problem(http.StatusServiceUnavailable, "unavailable", "Service unavailable",
			"the event could not be handled now and was not kept; send it again (with the same Idempotency-Key)")
		p.RetryAfter = 5
		if errors.Is(err, ErrSourceStopped) {
			p.RetryAfter = 1
		}
		writeProblem(w, p)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": ev.ID, "source": ev.Source, "type": ev.Type})
}

// rulesResponse is GET /rules.
type rulesResponse struct {
	Rules []RuleStatus `json:"rules"`
	RunnerStatus
}

func (r *Runner) serveRules(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, rulesResponse{Rules: r.engine.Rules(), RunnerStatus: r.Status()})
}

func (r *Runner) serveFirings(w http.ResponseWriter, req *http.Request) {
	name := chi.URLParam(req, "name")
	if r.engine.Set().Rule(name) == nil {
		writeProblem(w, notFound("no rule is named "+strconv.Quote(name)))
		return
	}
	limit := defaultFiringsLimit
	if v := req.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxFiringsLimit {
			writeProblem(w, problem(http.StatusBadRequest, "invalid-parameter", "Invalid query parameter",
				"limit must be an integer from 1 to "+strconv.Itoa(maxFiringsLimit)))
			return
		}
		limit = n
	}
	if r.cfg.Firings == nil {
		writeProblem(w, unavailable("no firing store is configured"))
		return
	}
	firings, err := r.cfg.Firings.Recent(req.Context(), name, limit)
	if err != nil {
		if errors.Is(err, correlation.ErrUnavailable) {
			writeProblem(w, unavailable("the firing store cannot be reached; try again later"))
			return
		}
		r.logger.Error("list firings", "rule", name, "error", err)
		writeProblem(w, problem(http.StatusInternalServerError, "internal", "Internal error", "the firings could not be read"))
		return
	}
	if firings == nil {
		firings = []Firing{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rule": name, "firings": firings})
}

// testRequest is POST /rules/test: {"source": "<rule source>", "event":
// {...}}, or the event alone (then every rule is tried).
type testRequest struct {
	Source string          `json:"source"`
	Event  json.RawMessage `json:"event"`
}

// testResponse is the dry run's answer.
type testResponse struct {
	Source  string       `json:"source,omitempty"`
	Event   Event        `json:"event"`
	Results []TestResult `json:"results"`
}

func (r *Runner) serveTest(w http.ResponseWriter, req *http.Request) {
	body, p := readJSON(w, req)
	if p != nil {
		writeProblem(w, p)
		return
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		writeProblem(w, invalidJSON("the body must be a JSON object: an event, or {\"source\", \"event\"}"))
		return
	}
	var tr testRequest
	if _, wrapped := probe["event"]; wrapped {
		if err := json.Unmarshal(body, &tr); err != nil {
			writeProblem(w, invalidJSON("source must be a string and event an object: "+err.Error()))
			return
		}
	} else {
		tr.Event = body
	}
	var ev Event
	dec := json.NewDecoder(bytes.NewReader(tr.Event))
	if err := dec.Decode(&ev); err != nil {
		writeProblem(w, invalidJSON("the event is not an event (id, source, type, time as RFC 3339, data): "+err.Error()))
		return
	}
	if ev.ID == "" {
		ev.ID = "test"
	}
	if ev.Source == "" {
		ev.Source = "test"
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if len(ev.Data) == 0 {
		ev.Data = json.RawMessage("null")
	}
	if tr.Source != "" {
		if _, ok := r.engine.Set().Sources[tr.Source]; !ok {
			writeProblem(w, notFound("no source is named "+strconv.Quote(tr.Source)))
			return
		}
	}
	results := r.engine.Test(req.Context(), tr.Source, ev)
	if results == nil {
		results = []TestResult{}
	}
	writeJSON(w, http.StatusOK, testResponse{Source: tr.Source, Event: ev, Results: results})
}

// readJSON enforces the content type, the size limit and JSON validity.
func readJSON(w http.ResponseWriter, req *http.Request) ([]byte, *httpProblem) {
	if p := checkJSONType(req.Header.Get("Content-Type")); p != nil {
		return nil, p
	}
	if req.ContentLength > MaxHookBody {
		return nil, bodyTooLarge()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxHookBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, bodyTooLarge()
		}
		return nil, invalidJSON("the body could not be read: " + err.Error())
	}
	if !json.Valid(body) {
		return nil, invalidJSON("the body is not valid JSON")
	}
	return body, nil
}

func checkJSONType(header string) *httpProblem {
	const kind, title = "unsupported-media-type", "Unsupported media type"
	if header == "" {
		return problem(http.StatusUnsupportedMediaType, kind, title, "Content-Type is missing; send application/json")
	}
	mt, params, err := mime.ParseMediaType(header)
	if err != nil {
		return problem(http.StatusUnsupportedMediaType, kind, title, "Content-Type "+strconv.Quote(header)+" cannot be parsed")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return problem(http.StatusUnsupportedMediaType, kind, title, "only the utf-8 charset is accepted")
	}
	if mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return problem(http.StatusUnsupportedMediaType, kind, title, "Content-Type "+mt+" is not JSON; send application/json")
}

// httpProblem is an RFC 9457 problem detail, shaped like the API's.
type httpProblem = httpjson.Problem

func problem(status int, kind, title, detail string) *httpProblem {
	return httpjson.NewProblem(status, kind, title, detail)
}

func notFound(detail string) *httpProblem {
	return problem(http.StatusNotFound, "not-found", "Not found", detail)
}

func invalidJSON(detail string) *httpProblem {
	return problem(http.StatusBadRequest, "invalid-json", "Invalid JSON body", detail)
}

func bodyTooLarge() *httpProblem {
	return problem(http.StatusRequestEntityTooLarge, "body-too-large", "Body too large",
		"the body is larger than the limit of "+strconv.Itoa(MaxHookBody)+" bytes; large payloads are refused, never truncated")
}

func unavailable(detail string) *httpProblem {
	p := problem(http.StatusServiceUnavailable, "unavailable", "Service unavailable", detail)
	p.RetryAfter = 5
	return p
}

func writeProblem(w http.ResponseWriter, p *httpProblem) { httpjson.WriteProblem(w, p) }

func writeJSON(w http.ResponseWriter, status int, v any) { httpjson.WriteJSON(w, status, v) }

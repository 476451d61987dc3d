package rules

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type httpResult struct {
	status int
	header http.Header
	body   []byte
}

func (r httpResult) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

func doHTTP(t *testing.T, srv *httptest.Server, method, path string, headers map[string]string, body string) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return httpResult{status: res.StatusCode, header: res.Header, body: out}
}

func requireProblem(t *testing.T, r httpResult, status int, kind string) {
	t.Helper()
	require.Equal(t, status, r.status, "body: %s", r.body)
	require.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
	p := r.json(t)
	require.Equal(t, "urn:switchboard:problem:"+kind, p["type"], "body: %s", r.body)
	require.EqualValues(t, status, p["status"])
	require.NotEmpty(t, p["title"])
	require.NotEmpty(t, p["detail"])
}

var jsonHeaders = map[string]string{"Content-Type": "application/json"}

func TestHTTP(t *testing.T) {
	t.Parallel()
	b := setupLocal(t, map[string]string{"archive.yaml": hookRules, "legacy.yaml": udpRules(freeUDP(t))})
	srv := httptest.NewServer(b.runner.Handler())
	t.Cleanup(srv.Close)
	b.source(t, "archive")

	t.Run("hook", func(t *testing.T) {
		h := map[string]string{"Content-Type": "application/json", "Idempotency-Key": "k-1", "Event-Type": "ingestion-complete"}
		r := doHTTP(t, srv, "POST", "/hooks/archive", h, `{"instrument":"VLA"}`)
		require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
		require.Equal(t, map[string]any{"id": "k-1", "source": "hook:archive", "type": "ingestion-complete"}, r.json(t))
		f, _ := b.firings.Recent(t.Context(), "vla", 10)
		require.Len(t, f, 1, "decided before the answer")
		require.Equal(t, "k-1", f[0].EventID)

		requireProblem(t, doHTTP(t, srv, "POST", "/hooks/nope", jsonHeaders, `{}`), 404, "not-found")
		requireProblem(t, doHTTP(t, srv, "POST", "/hooks/legacy", jsonHeaders, `{}`), 404, "not-found")
		requireProblem(t, doHTTP(t, srv, "POST", "/hooks/archive", nil, `{}`), 415, "unsupported-media-type")
		requireProblem(t, doHTTP(t, srv, "POST", "/hooks/archive", map[string]string{"Content-Type": "text/plain"}, `{}`), 415, "unsupported-media-type")
		requireProblem(t, doHTTP(t, srv, "POST", "/hooks/archive", jsonHeaders, `{"a":`), 400, "invalid-json")
		requireProblem(t, doHTTP(t, srv, "POST", "/hooks/archive", jsonHeaders, `"`+strings.Repeat("x", MaxHookBody)+`"`), 413, "body-too-large")

		// The engine cannot record: 503, so the sender retries.
		b.firings.setFailing(true)
		r = doHTTP(t, srv, "POST", "/hooks/archive", h, `{"instrument":"VLA"}`)
		b.firings.setFailing(false)
		requireProblem(t, r, 503, "unavailable")
		require.NotEmpty(t, r.header.Get("Retry-After"))
	})

	t.Run("rules", func(t *testing.T) {
		r := doHTTP(t, srv, "GET", "/rules", nil, "")
		require.Equal(t, 200, r.status)
		var body struct {
			Rules     []RuleStatus   `json:"rules"`
			Files     []string       `json:"files"`
			LastError string         `json:"last_error"`
			Sources   []SourceStatus `json:"sources"`
		}
		require.NoError(t, json.Unmarshal(r.body, &body))
		require.Len(t, body.Files, 2)
		require.Empty(t, body.LastError)
		require.Len(t, body.Sources, 2)
		byName := map[string]RuleStatus{}
		for _, rs := range body.Rules {
			byName[rs.Name] = rs
		}
		require.Contains(t, byName, "vla")
		require.Equal(t, "archive", byName["vla"].Source)
		require.Equal(t, []string{"publish"}, byName["vla"].Actions)
		require.Contains(t, byName["vla"].File, "archive.yaml")
		require.GreaterOrEqual(t, byName["vla"].Matches, int64(1))
	})

	t.Run("firings", func(t *testing.T) {
		r := doHTTP(t, srv, "GET", "/rules/vla/firings?limit=5", nil, "")
		require.Equal(t, 200, r.status, "body: %s", r.body)
		var body struct {
			Rule    string   `json:"rule"`
			Firings []Firing `json:"firings"`
		}
		require.NoError(t, json.Unmarshal(r.body, &body))
		require.Equal(t, "vla", body.Rule)
		require.NotEmpty(t, body.Firings)
		requireProblem(t, doHTTP(t, srv, "GET", "/rules/nope/firings", nil, ""), 404, "not-found")
		requireProblem(t, doHTTP(t, srv, "GET", "/rules/vla/firings?limit=0", nil, ""), 400, "invalid-parameter")
		requireProblem(t, doHTTP(t, srv, "GET", "/rules/vla/firings?limit=x", nil, ""), 400, "invalid-parameter")
	})

	t.Run("dry run", func(t *testing.T) {
		before, _ := b.firings.Recent(t.Context(), "vla", 100)
		r := doHTTP(t, srv, "POST", "/rules/test", jsonHeaders,
			`{"source":"archive","event":{"id":"e-1","type":"ingestion-complete","data":{"instrument":"VLA","obs":"x"}}}`)
		require.Equal(t, 200, r.status, "body: %s", r.body)
		var body testResponse
		require.NoError(t, json.Unmarshal(r.body, &body))
		require.Equal(t, "archive", body.Source)
		require.Len(t, body.Results, 1)
		res := body.Results[0]
		require.True(t, res.Matched)
		require.Len(t, res.Actions, 1)
		require.Equal(t, "publish", res.Actions[0].Kind)
		require.Equal(t, "calibrate", res.Actions[0].Output.RoutingKey)
		require.Equal(t, OutputID("test", "e-1", "vla", 0), res.Actions[0].Output.ID)
		after, _ := b.firings.Recent(t.Context(), "vla", 100)
		require.Equal(t, len(before), len(after), "a dry run records nothing")

		// Just an event: every rule is tried.
		r = doHTTP(t, srv, "POST", "/rules/test", jsonHeaders, `{"type":"ingestion-complete","data":{"instrument":"ALMA"}}`)
		require.Equal(t, 200, r.status, "body: %s", r.body)
		body = testResponse{}
		require.NoError(t, json.Unmarshal(r.body, &body))
		require.Len(t, body.Results, 2)
		for _, res := range body.Results {
			if res.Rule == "vla" {
				require.False(t, res.Matched)
			} else {
				require.True(t, res.Matched, "legacy-any matches anything")
			}
		}

		// A condition that errors is reported, not fatal.
		r = doHTTP(t, srv, "POST", "/rules/test", jsonHeaders, `{"source":"archive","event":{"type":"ingestion-complete","data":{}}}`)
		require.Equal(t, 200, r.status)
		body = testResponse{}
		require.NoError(t, json.Unmarshal(r.body, &body))
		require.False(t, body.Results[0].Matched)
		require.NotEmpty(t, body.Results[0].Error)

		requireProblem(t, doHTTP(t, srv, "POST", "/rules/test", jsonHeaders, `{"source":"nope","event":{}}`), 404, "not-found")
		requireProblem(t, doHTTP(t, srv, "POST", "/rules/test", jsonHeaders, `[1]`), 400, "invalid-json")
		requireProblem(t, doHTTP(t, srv, "POST", "/rules/test", jsonHeaders, `{"event":{"time":"yesterday"}}`), 400, "invalid-json")
		requireProblem(t, doHTTP(t, srv, "POST", "/rules/test", nil, `{}`), 415, "unsupported-media-type")
	})
}

package api

// Fuzz targets for HTTP request parsing: routing keys, headers, bodies, and
// the submit and reply handlers driven in-process. `make test` runs the seeds
// (the f.Add calls and testdata/fuzz/<FuzzName>/) as ordinary tests; `make
// fuzz` explores beyond them.
//
// The handler targets use tiny in-memory doubles of the Gateway and Records
// interfaces: they test what the handlers parse and refuse, not the store.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/correlation"
)

// fuzzSegmentRE is the contract's segment rule (CONTRACT §1), written out
// again here rather than borrowed from the code under test.
var fuzzSegmentRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Seeds shared by several targets.
const (
	seedID      = "61934db2-f9d7-47e2-be80-9706615aae06" // the seed document's Message ID
	seedTime    = "1552959300136"                        // the seed document's Time
	seedBody    = "{\n  \"Workflow\": \"46371a70b2cf3953b12b3e0bf8a83ea2\",\n  \"Modules\": [\n    {\n      \"GridCapability\": [\n        \"23c83140-05df-4b53-9ccf-ce1fcfc22773\"\n      ]\n    }\n  ]\n}"
	seg64       = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	maxTime     = int64(1) << 53
	fuzzMaxBody = 256 // small, so the fuzzer reaches 413 easily
)

// checkRoutingKeyShape fails unless key has 1 to 8 dot-separated segments of
// [A-Za-z0-9_-]{1,64}.
func checkRoutingKeyShape(t *testing.T, key string) {
	t.Helper()
	segs := strings.Split(key, ".")
	if len(segs) < 1 || len(segs) > 8 {
		t.Fatalf("routing key %q has %d segments", key, len(segs))
	}
	for _, s := range segs {
		if !fuzzSegmentRE.MatchString(s) {
			t.Fatalf("routing key %q has segment %q", key, s)
		}
	}
}

// checkProblem fails unless p is a problem of one of the statuses, with a
// type, title and detail.
func checkProblem(t *testing.T, what string, p *Problem, statuses ...int) {
	t.Helper()
	if p == nil {
		t.Fatalf("%s: nil problem", what)
	}
	ok := false
	for _, s := range statuses {
		ok = ok || p.Status == s
	}
	if !ok {
		t.Fatalf("%s: problem status %d, want one of %v", what, p.Status, statuses)
	}
	if !strings.HasPrefix(p.Type, problemTypeBase) || len(p.Type) == len(problemTypeBase) {
		t.Fatalf("%s: problem type %q", what, p.Type)
	}
	if p.Title == "" || strings.TrimSpace(p.Detail) == "" {
		t.Fatalf("%s: problem without title or detail: %+v", what, p)
	}
}

// checkProblemResponse fails unless rec is an RFC 9457 problem whose status
// member equals the HTTP status.
func checkProblemResponse(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d with Content-Type %q, want application/problem+json; body %s", rec.Code, ct, rec.Body)
	}
	var p struct {
		Type   *string `json:"type"`
		Title  *string `json:"title"`
		Status *int    `json:"status"`
		Detail *string `json:"detail"`
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("status %d: problem body is not JSON: %v: %q", rec.Code, err, rec.Body)
	}
	if dec.More() {
		t.Fatalf("status %d: trailing data after the problem: %q", rec.Code, rec.Body)
	}
	if p.Type == nil || p.Title == nil || p.Status == nil || p.Detail == nil {
		t.Fatalf("status %d: problem lacks type, title, status or detail: %s", rec.Code, rec.Body)
	}
	if *p.Status != rec.Code {
		t.Fatalf("problem status %d but HTTP status %d", *p.Status, rec.Code)
	}
	if !strings.HasPrefix(*p.Type, problemTypeBase) || *p.Title == "" || strings.TrimSpace(*p.Detail) == "" {
		t.Fatalf("status %d: incomplete problem: %s", rec.Code, rec.Body)
	}
}

// checkWebhook fails unless w is an absolute http(s) URL with a host and no
// user information, as stored for Reply-To.
func checkWebhook(t *testing.T, w string) {
	t.Helper()
	u, err := url.Parse(w)
	if err != nil {
		t.Fatalf("webhook %q does not parse: %v", w, err)
	}
	if !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") {
		t.Fatalf("webhook %q is not an absolute http(s) URL", w)
	}
	if u.Hostname() == "" {
		t.Fatalf("webhook %q has no host name (host %q)", w, u.Host)
	}
	if u.User != nil {
		t.Fatalf("webhook %q carries user information", w)
	}
	if again := u.String(); again != w {
		t.Fatalf("webhook %q is not stable: parses and prints as %q", w, again)
	}
}

func FuzzRoutingKey(f *testing.F) {
	for _, s := range []string{
		"/workflow/create", "/orion/workflow/create", "/a", "/A-b_9/c", "/" + seg64, "/" + seg64 + "a",
		"/a/b/c/d/e/f/g/h", "/a/b/c/d/e/f/g/h/i", "", "/", "//", "/a//b", "/a/", "/a.b", "/a b",
		"/a%2Fb", "/a%2fb", "/%61", "/é", "/日本", "/a/*", "/a/#", "/a/../b", "/./a", "/a\x00b",
		"/a\nb", "/a?x=1", "/a#frag", "/v1/replies", "/\xff", "workflow/create",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		key, p := routingKey(path)
		if p != nil {
			if key != "" {
				t.Fatalf("routingKey(%q) returned key %q with a problem", path, key)
			}
			checkProblem(t, "routingKey("+strconv.Quote(path)+")", p, http.StatusBadRequest)
			return
		}
		checkRoutingKeyShape(t, key)
		back := "/" + strings.ReplaceAll(key, ".", "/")
		if strings.HasPrefix(path, "/") {
			if back != path {
				t.Fatalf("routingKey(%q) = %q, which maps back to %q", path, key, back)
			}
		} else if back != "/"+path {
			// Request paths always begin with "/"; without one the path is
			// read as if it had it.
			t.Fatalf("routingKey(%q) = %q, which maps back to %q", path, key, back)
		}
	})
}

func FuzzHeaders(f *testing.F) {
	for _, s := range []string{
		"", " ", "\t", "\x00", "é", "\xff",
		// Message-ID
		seedID, strings.ToUpper(seedID), " " + seedID + " ", "urn:uuid:" + seedID, "{" + seedID + "}",
		strings.ReplaceAll(seedID, "-", ""), "62baf6697-20fe-4683-964a-b92779275291", uuid.Nil.String(),
		"61934db2-f9d7-47e2-be80-9706615aae0g", "61934db2+f9d7-47e2-be80-9706615aae06",
		// Time, Request-Timeout, ?wait=
		seedTime, "0", "1", "-1", "+5", "007", " 42 ", "1.5", "1e3", "0x10",
		"9007199254740992", "9007199254740993", "9223372036854775808", "9223372036",
		"-9223372036854775808", "86400", "86401", "60", "61", "3600",
		// Reply-To
		"Reply Queue", "https://client.example.com/hooks/switchboard", "http://example.com",
		"HTTPS://EXAMPLE.COM/x", "ftp://example.com/", "//example.com/x", "/relative",
		"http://user:pass@example.com/", "http://@example.com/", "http://[::1]:8080/x", "http://example.com:8080/hook",
		"http://example.com/a b", "http://example.com/%zz", "http://é.example/", "mailto:a@example.com",
		// Prefer
		"wait=5", "wait=0", "WAIT = 10", `wait="7"`, "wait=10; foo", "respond-async, wait=100",
		"handling=lenient, wait=-1, wait=3", "wait", "wait=", "wait=abc", "return=minimal",
		// Content-Type
		"application/json", "application/json; charset=utf-8", "application/json; charset=UTF-8",
		"Application/JSON", "application/problem+json", "application/vnd.api+json; charset=utf-8",
		"application/json; charset=iso-8859-1", "text/plain", "application/jsonx", "application/+json",
		"application/json; =broken", "application/json; charset=utf-8; charset=utf-8", "text/json+x",
	} {
		f.Add(s)
	}
	const (
		def     = 60 * time.Second
		maxTO   = 24 * time.Hour
		maxWait = 60 * time.Second
	)
	f.Fuzz(func(t *testing.T, v string) {
		q := strconv.Quote(v)

		// Message-ID: canonical UUIDs only, printed back in lowercase.
		id, has, p := parseMessageID(v)
		switch {
		case v == "":
			if has || p != nil || id != uuid.Nil {
				t.Fatalf("parseMessageID(\"\") = %v, %v, %v", id, has, p)
			}
		case p != nil:
			if has || id != uuid.Nil {
				t.Fatalf("parseMessageID(%s) refused but returned %v, %v", q, id, has)
			}
			checkProblem(t, "parseMessageID("+q+")", p, http.StatusBadRequest)
		default:
			if !has || id == uuid.Nil {
				t.Fatalf("parseMessageID(%s) = %v, %v", q, id, has)
			}
			if want := strings.ToLower(strings.TrimSpace(v)); id.String() != want {
				t.Fatalf("parseMessageID(%s) = %s, not the canonical form %q", q, id, want)
			}
		}

		// Time: 1 to 2^53 ms.
		ms, has, p := parseTime(v)
		switch {
		case v == "":
			if has || p != nil || ms != 0 {
				t.Fatalf("parseTime(\"\") = %d, %v, %v", ms, has, p)
			}
		case p != nil:
			checkProblem(t, "parseTime("+q+")", p, http.StatusBadRequest)
		default:
			if !has || ms < 1 || ms > maxTime {
				t.Fatalf("parseTime(%s) = %d, %v", q, ms, has)
			}
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil || n != ms {
				t.Fatalf("parseTime(%s) = %d, but the value reads as %d, %v", q, ms, n, err)
			}
		}

		// Request-Timeout: whole seconds in [1s, max], default when absent.
		to, p := parseTimeout(v, def, maxTO)
		switch {
		case v == "":
			if p != nil || to != def {
				t.Fatalf("parseTimeout(\"\") = %v, %v", to, p)
			}
		case p != nil:
			checkProblem(t, "parseTimeout("+q+")", p, http.StatusBadRequest)
		default:
			if to < time.Second || to > maxTO || to%time.Second != 0 {
				t.Fatalf("parseTimeout(%s) = %v", q, to)
			}
		}

		// Reply-To: an absolute http(s) URL with a host, no credentials.
		hook, p := parseWebhook(v)
		switch {
		case v == "":
			if p != nil || hook != "" {
				t.Fatalf("parseWebhook(\"\") = %q, %v", hook, p)
			}
		case p != nil:
			if hook != "" {
				t.Fatalf("parseWebhook(%s) refused but returned %q", q, hook)
			}
			checkProblem(t, "parseWebhook("+q+")", p, http.StatusBadRequest)
		default:
			if len(v) > 2048 {
				t.Fatalf("parseWebhook accepted a %d-byte value", len(v))
			}
			checkWebhook(t, hook)
		}

		// Prefer: each line is one Prefer header; wait is never negative.
		if n, ok := preferWait(strings.Split(v, "\n")); ok {
			if n < 0 {
				t.Fatalf("preferWait(%s) = %d", q, n)
			}
			if !strings.Contains(strings.ToLower(v), "wait") {
				t.Fatalf("preferWait(%s) = %d without a wait preference", q, n)
			}
		} else if n != 0 {
			t.Fatalf("preferWait(%s) = %d, false", q, n)
		}
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			if got, ok := preferWait([]string{"wait=" + v}); !ok || got != n {
				t.Fatalf("preferWait(wait=%s) = %d, %v; want %d", v, got, ok, n)
			}
		}

		// ?wait=: whole seconds in [0, max].
		w, p := parseWait(v, maxWait)
		if p != nil {
			if v == "" {
				t.Fatalf("parseWait(\"\") refused: %v", p)
			}
			checkProblem(t, "parseWait("+q+")", p, http.StatusBadRequest)
		} else if w < 0 || w > maxWait || w%time.Second != 0 {
			t.Fatalf("parseWait(%s, %v) = %v, outside [0, %v]", q, maxWait, w, maxWait)
		}

		// Content-Type: application/json or application/*+json, utf-8 only.
		if p := checkJSONContentType(v); p != nil {
			checkProblem(t, "checkJSONContentType("+q+")", p, http.StatusUnsupportedMediaType)
		} else {
			mt, params, err := mime.ParseMediaType(v)
			if err != nil {
				t.Fatalf("checkJSONContentType accepted %s, which does not parse: %v", q, err)
			}
			if mt != "application/json" && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
				t.Fatalf("checkJSONContentType accepted %s (%s)", q, mt)
			}
			if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
				t.Fatalf("checkJSONContentType accepted charset %q", cs)
			}
		}
	})
}

// fuzzClock is the handlers' now in the handler targets.
var fuzzClock = time.UnixMilli(1_700_000_000_000)

// Behaviours of the fake gateway, chosen by the fuzz input's mode byte.
const (
	modePending         = iota // Submit: pending; a wait sees the reply
	modeQueued                 // Submit: queued (broker down); a wait sees no change
	modeUnroutable             // Submit: the broker returned it
	modeConflict               // Submit: ErrConflict
	modeUnavailable            // Submit: ErrUnavailable
	modeReplied                // Submit: an idempotent repeat of a replied request
	modeWaitUnavailable        // Submit: pending; the wait fails with ErrUnavailable
	submitModes
)

// modeChunked in the mode byte sends the body chunked, without Content-Length.
const modeChunked = 8

// fakeGateway records what the handlers hand to it. The embedded interface
// covers methods the submit and reply handlers never call (a call would
// panic, which the server answers with a 500 the targets refuse).
type fakeGateway struct {
	Gateway
	mode     int
	submits  []correlation.NewRequest
	replies  []correlation.IncomingReply
	receipts int
}

func (g *fakeGateway) Submit(_ context.Context, n correlation.NewRequest) (correlation.Request, bool, error) {
	g.submits = append(g.submits, n)
	rec := correlation.Request{ID: n.ID, RoutingKey: n.RoutingKey, Status: correlation.StatusPending, Time: n.Time,
		ExpiresAt: n.ExpiresAt, ReplyTo: n.ReplyTo, Body: n.Body, CreatedAt: fuzzClock}
	switch g.mode {
	case modeQueued:
		rec.Status = correlation.StatusQueued
	case modeUnroutable:
		rec.Status = correlation.StatusUnroutable
	case modeConflict:
		return correlation.Request{}, false, correlation.ErrConflict
	case modeUnavailable:
		return correlation.Request{}, false, fmt.Errorf("create request: %w", correlation.ErrUnavailable)
	case modeReplied:
		rec.Status = correlation.StatusReplied
		rec.Reply = &correlation.Reply{MessageID: uuid.NewString(), CorrelationID: n.ID.String(), Time: n.Time, Body: []byte(`{}`)}
		return rec, false, nil
	}
	return rec, true, nil
}

// ReplyRead counts the receipts of replies the handlers answered with.
func (g *fakeGateway) ReplyRead(uuid.UUID) { g.receipts++ }

// Outcomes of the fake StoreReply, by mode.
var replyModes = []correlation.Outcome{correlation.OutcomeStored, correlation.OutcomeDuplicate,
	correlation.OutcomeUnknown, correlation.OutcomeLate, correlation.OutcomeClosed, ""}

func (g *fakeGateway) StoreReply(_ context.Context, in correlation.IncomingReply) (correlation.Outcome, error) {
	g.replies = append(g.replies, in)
	if o := replyModes[g.mode%len(replyModes)]; o != "" {
		return o, nil
	}
	return "", fmt.Errorf("store reply: %w", correlation.ErrUnavailable)
}

// fakeRecords answers at once: the fuzzer never blocks on a wait.
type fakeRecords struct {
	Records
	gw    *fakeGateway
	waits []time.Duration
}

// Owner answers from the submits seen, as Get does.
func (r *fakeRecords) Owner(_ context.Context, id uuid.UUID) (correlation.Owner, error) {
	rec, err := r.last(id)
	return correlation.Owner{ProjectID: rec.ProjectID, RoutingKey: rec.RoutingKey}, err
}

func (r *fakeRecords) last(id uuid.UUID) (correlation.Request, error) {
	for i := len(r.gw.submits) - 1; i >= 0; i-- {
		if n := r.gw.submits[i]; n.ID == id {
			return correlation.Request{ID: n.ID, RoutingKey: n.RoutingKey, Status: correlation.StatusPending,
				Time: n.Time, ExpiresAt: n.ExpiresAt, ReplyTo: n.ReplyTo, Body: n.Body}, nil
		}
	}
	return correlation.Request{}, correlation.ErrNotFound
}

func (r *fakeRecords) Get(_ context.Context, id uuid.UUID) (correlation.Request, error) {
	return r.last(id)
}

func (r *fakeRecords) Wait(_ context.Context, id uuid.UUID, d time.Duration) (correlation.Request, error) {
	r.waits = append(r.waits, d)
	rec, err := r.last(id)
	if err != nil {
		return rec, err
	}
	switch r.gw.mode {
	case modePending:
		rec.Status = correlation.StatusReplied
		rec.Reply = &correlation.Reply{MessageID: uuid.NewString(), CorrelationID: id.String(), Time: rec.Time, Body: []byte(`{"ok":true}`)}
	case modeQueued:
		rec.Status = correlation.StatusQueued
	case modeWaitUnavailable:
		return correlation.Request{}, fmt.Errorf("wait: %w", correlation.ErrUnavailable)
	}
	return rec, nil
}

// fuzzServer is a Server on the fakes with a small body limit and a fixed clock.
func fuzzServer(t *testing.T, mode int) (*Server, *fakeGateway, *fakeRecords) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.MaxBodyBytes = fuzzMaxBody
	gw := &fakeGateway{mode: mode}
	records := &fakeRecords{gw: gw}
	s, err := New(cfg, gw, records, http.NotFoundHandler(), uuid.New, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return fuzzClock }
	// Any well-formed Reply-To is taken: the SSRF policy has tests of its own.
	s.SetWebhooks(Webhooks{ValidateURL: func(string) error { return nil }})
	return s, gw, records
}

// fuzzRequest builds a POST as net/http's server would hand it over. The
// bool is false when target is not a request target the server accepts.
// chunked sends the body without a Content-Length.
func fuzzRequest(target string, body []byte, chunked bool) (*http.Request, bool) {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, false
	}
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	r.URL, r.RequestURI = u, target
	r.ContentLength = int64(len(body))
	if chunked {
		r.ContentLength = -1
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	return r, true
}

func setHeader(r *http.Request, name, value string) {
	if value != "" {
		r.Header.Set(name, value)
	}
}

func FuzzSubmitHandler(f *testing.F) {
	// path, Content-Type, Message-ID, Time, Request-Timeout, Reply-To, Prefer, body, mode
	f.Add("/orion/workflow/create", "application/json", seedID, seedTime, "", "", "", []byte(seedBody), uint8(modePending))
	f.Add("/orion/workflow/create", "application/json", seedID, seedTime, "", "Reply Queue", "", []byte(seedBody), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modeQueued))
	f.Add("/workflow/create", "application/json; charset=utf-8", strings.ToUpper(seedID), "1", "1", "https://client.example.com/hooks/switchboard", "wait=5", []byte(`{"a":1}`), uint8(modePending))
	f.Add("/workflow/create", "application/cloudevents+json", " "+seedID+" ", "9007199254740992", "86400", "http://example.com", `wait="0"`, []byte(`[1,2,3]`), uint8(modeReplied))
	f.Add("/workflow/create", "application/json", "urn:uuid:"+seedID, "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "9007199254740993", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "-1", "0", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "", "86401", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "", "", "http://user:pw@example.com/", "", []byte(`{}`), uint8(modePending))
	f.Add("/workflow/create", "text/plain", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/workflow/create", "", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "", "", "", "", []byte(`{"a":`), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "", "", "", "", []byte(``), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "", "", "", "", []byte("\"\xff\""), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "", "", "", "", bytes.Repeat([]byte(" "), fuzzMaxBody-2), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "", "", "", "", []byte(`"`+strings.Repeat("x", fuzzMaxBody-2)+`"`), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "", "", "", "", []byte(`"`+strings.Repeat("x", fuzzMaxBody-1)+`"`), uint8(modePending))
	f.Add("/workflow/create", "application/json", "", "", "", "", "", []byte(`"`+strings.Repeat("x", fuzzMaxBody-1)+`"`), uint8(modeChunked+modePending))
	f.Add("/workflow/create", "application/json", "", "", "", "", "wait=60", []byte(`{}`), uint8(modeWaitUnavailable))
	f.Add("/workflow/create", "application/json", "", "", "", "", "wait=100", []byte(`{}`), uint8(modeQueued))
	f.Add("/workflow/create", "application/json", "", "", "", "http://example.com:8080/hook", "wait=9223372036", []byte(`{}`), uint8(modePending))
	f.Add("/workflow/create", "application/json", seedID, "", "", "", "", []byte(`{}`), uint8(modeConflict))
	f.Add("/workflow/create", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modeUnroutable))
	f.Add("/workflow/create", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modeUnavailable))
	f.Add("/"+seg64+"/x", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/"+seg64+"a/x", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/a/b/c/d/e/f/g/h", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/a/b/c/d/e/f/g/h/i", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/a%2Fb", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/%61/b", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/v%31/replies", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/%C3%A9", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/a.b", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/healthz", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/v1/requests/"+seedID, "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/v1/other", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("/", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("*", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))
	f.Add("http://example.com/workflow/create?x=1", "application/json", "", "", "", "", "", []byte(`{}`), uint8(modePending))

	f.Fuzz(func(t *testing.T, target, contentType, messageID, timeH, timeout, replyTo, prefer string, body []byte, mode uint8) {
		m := int(mode&7) % submitModes
		chunked := mode&modeChunked != 0
		r, ok := fuzzRequest(target, body, chunked)
		if !ok {
			return // net/http answers 400 before any handler runs
		}
		setHeader(r, "Content-Type", contentType)
		setHeader(r, "Message-ID", messageID)
		setHeader(r, "Time", timeH)
		setHeader(r, "Request-Timeout", timeout)
		setHeader(r, "Reply-To", replyTo)
		setHeader(r, "Prefer", prefer)

		s, gw, records := fuzzServer(t, m)
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)

		switch w.Code {
		case 200, 202, 400, 404, 405, 409, 413, 415, 503:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		if len(gw.submits) > 1 {
			t.Fatalf("Submit called %d times", len(gw.submits))
		}
		submitted := len(gw.submits) == 1
		if w.Code >= 300 {
			checkProblemResponse(t, w)
		}

		// What the parsers say of the input; the handler must agree.
		_, keyErr := routingKey(r.URL.EscapedPath())
		_, _, idErr := parseMessageID(messageID)
		_, _, timeErr := parseTime(timeH)
		_, toErr := parseTimeout(timeout, s.cfg.DefaultTimeout, s.cfg.MaxTimeout)
		_, hookErr := parseWebhook(replyTo)
		valid := !isReserved(r.URL.Path) && keyErr == nil && idErr == nil && timeErr == nil && toErr == nil &&
			hookErr == nil && checkJSONContentType(contentType) == nil &&
			int64(len(body)) <= s.cfg.MaxBodyBytes && json.Valid(body)
		if valid != submitted {
			t.Fatalf("valid input %v but Submit called %v (status %d: %s)", valid, submitted, w.Code, w.Body)
		}
		switch w.Code {
		case 400, 404, 405, 415:
			// refused before anything was written (checked above)
		case 413:
			if int64(len(body)) <= s.cfg.MaxBodyBytes {
				t.Fatalf("413 for a %d-byte body", len(body))
			}
		case 409:
			if m != modeConflict {
				t.Fatalf("409 without a conflict")
			}
		case 503:
			if m != modeUnroutable && m != modeUnavailable && m != modeWaitUnavailable {
				t.Fatalf("503 in mode %d", m)
			}
		}
		if !submitted {
			return
		}

		n := gw.submits[0]
		checkRoutingKeyShape(t, n.RoutingKey)
		if back := "/" + strings.ReplaceAll(n.RoutingKey, ".", "/"); back != r.URL.EscapedPath() {
			t.Fatalf("path %q submitted with routing key %q", r.URL.EscapedPath(), n.RoutingKey)
		}
		if !json.Valid(n.Body) || int64(len(n.Body)) > s.cfg.MaxBodyBytes || !bytes.Equal(n.Body, body) {
			t.Fatalf("submitted body %q for body %q", n.Body, body)
		}
		if n.ID == uuid.Nil {
			t.Fatal("submitted the nil UUID")
		}
		if messageID != "" && n.ID.String() != strings.ToLower(strings.TrimSpace(messageID)) {
			t.Fatalf("Message-ID %q submitted as %s", messageID, n.ID)
		}
		if n.Time < 1 || n.Time > maxTime || (timeH == "" && n.Time != fuzzClock.UnixMilli()) {
			t.Fatalf("Time %q submitted as %d", timeH, n.Time)
		}
		if d := n.ExpiresAt.Sub(fuzzClock); d < time.Second || d > s.cfg.MaxTimeout || (timeout == "" && d != s.cfg.DefaultTimeout) {
			t.Fatalf("Request-Timeout %q submitted as a deadline %v away", timeout, d)
		}
		if replyTo == "" {
			if n.ReplyTo != "" {
				t.Fatalf("no Reply-To, but submitted %q", n.ReplyTo)
			}
		} else {
			checkWebhook(t, n.ReplyTo)
		}

		// The answer, by what the fake did.
		waitN, preferred := preferWait(r.Header.Values("Prefer"))
		want := http.StatusAccepted
		switch {
		case m == modeConflict:
			want = http.StatusConflict
		case m == modeUnavailable, m == modeUnroutable:
			want = http.StatusServiceUnavailable
		case preferred && m == modeReplied:
			want = http.StatusOK
		case preferred && waitN > 0 && m == modePending:
			want = http.StatusOK
		case preferred && waitN > 0 && m == modeWaitUnavailable:
			want = http.StatusServiceUnavailable
		}
		if w.Code != want {
			t.Fatalf("status %d, want %d (mode %d, Prefer %q): %s", w.Code, want, m, prefer, w.Body)
		}
		for _, d := range records.waits {
			if d <= 0 || d > s.cfg.MaxWait {
				t.Fatalf("waited %v with Prefer %q", d, prefer)
			}
		}
		if w.Code == http.StatusConflict || m == modeUnavailable {
			return
		}
		//lint:ignore SA1008 the handler writes the CONTRACT spelling, not the canonical Message-Id
		if got := w.Header()["Message-ID"]; len(got) != 1 || got[0] != n.ID.String() {
			t.Fatalf("Message-ID header %q, want %s", got, n.ID)
		}
		if got := w.Header().Get("Location"); got != "/v1/requests/"+n.ID.String() {
			t.Fatalf("Location %q", got)
		}
		if w.Code == http.StatusServiceUnavailable {
			return
		}
		if applied := w.Header().Get("Preference-Applied"); preferred {
			wantApplied := "wait=" + strconv.Itoa(min(waitN, int(s.cfg.MaxWait/time.Second)))
			if applied != wantApplied {
				t.Fatalf("Prefer %q answered with Preference-Applied %q, want %q", prefer, applied, wantApplied)
			}
		} else if applied != "" {
			t.Fatalf("Preference-Applied %q without a wait preference", applied)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%d with Content-Type %q", w.Code, ct)
		}
		var got recordJSON
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("record is not JSON: %v: %s", err, w.Body)
		}
		if got.ID != n.ID.String() || got.RoutingKey != n.RoutingKey || got.Time != n.Time {
			t.Fatalf("record %+v for %+v", got, n)
		}
	})
}

func FuzzPostReply(f *testing.F) {
	// Correlation-ID, Correl-ID, Reply-Status, Message-ID, Time, Content-Type, body, mode
	f.Add(seedID, "", "", "", "1553020348447", "application/json", []byte(`{"result":"Everything is awesome"}`), uint8(0))
	f.Add("", seedID, "", "62baf6697-20fe-4683-964a-b92779275291", "1553020348447", "application/json", []byte(`{}`), uint8(0))
	f.Add(seedID, "", "", "", "", "application/json", []byte(`{result: 'Everything is awesome'}`), uint8(0))
	f.Add(seedID, "other", "error", strings.ToUpper(seedID), "", "application/json", []byte(`{"error":"boom"}`), uint8(1))
	f.Add(seedID, "", " ERROR ", " "+seedID+" ", "9007199254740992", "application/problem+json", []byte(`"x"`), uint8(2))
	f.Add("not-a-uuid", "", "ok", "", "", "application/json", []byte(`null`), uint8(2))
	f.Add(seedID, "", "", "", "", "application/json", []byte(`{}`), uint8(3))
	f.Add(seedID, "", "", "", "", "application/json", []byte(`{}`), uint8(4))
	f.Add(seedID, "", "", "", "", "application/json", []byte(`{}`), uint8(5))
	f.Add("", "", "", "", "", "application/json", []byte(`{}`), uint8(0))
	f.Add(strings.Repeat("c", 255), "", "", "", "", "application/json", []byte(`{}`), uint8(2))
	f.Add(strings.Repeat("c", 256), "", "", "", "", "application/json", []byte(`{}`), uint8(0))
	f.Add(seedID, "", "failed", "", "", "application/json", []byte(`{}`), uint8(0))
	f.Add(seedID, "", "", "urn:uuid:"+seedID, "", "application/json", []byte(`{}`), uint8(0))
	f.Add(seedID, "", "", "", "0", "application/json", []byte(`{}`), uint8(0))
	f.Add(seedID, "", "", "", "9223372036854775808", "application/json", []byte(`{}`), uint8(0))
	f.Add(seedID, "", "", "", "", "text/plain", []byte(`{}`), uint8(0))
	f.Add(seedID, "", "", "", "", "application/json", []byte(`"`+strings.Repeat("x", fuzzMaxBody-1)+`"`), uint8(0))
	f.Add(seedID, "", "", "", "", "application/json", []byte(`"`+strings.Repeat("x", fuzzMaxBody-1)+`"`), uint8(8))
	f.Add("\xff\x00", "", "", "", "", "application/json", []byte(`{}`), uint8(2))

	f.Fuzz(func(t *testing.T, corrID, correlID, status, messageID, timeH, contentType string, body []byte, mode uint8) {
		m := int(mode & 7)
		r, _ := fuzzRequest("/v1/replies", body, mode&modeChunked != 0)
		setHeader(r, "Correlation-ID", corrID)
		setHeader(r, "Correl-ID", correlID)
		setHeader(r, "Reply-Status", status)
		setHeader(r, "Message-ID", messageID)
		setHeader(r, "Time", timeH)
		setHeader(r, "Content-Type", contentType)

		s, gw, _ := fuzzServer(t, m)
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)

		switch w.Code {
		case 200, 400, 404, 410, 413, 415, 503:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		if w.Code != http.StatusOK {
			checkProblemResponse(t, w)
		}
		if len(gw.replies) > 1 {
			t.Fatalf("StoreReply called %d times", len(gw.replies))
		}
		stored := len(gw.replies) == 1

		corr := corrID
		if corr == "" {
			corr = correlID
		}
		st := strings.ToLower(strings.TrimSpace(status))
		_, _, idErr := parseMessageID(messageID)
		_, _, timeErr := parseTime(timeH)
		valid := corr != "" && len(corr) <= 255 && utf8.ValidString(corr) && idErr == nil && timeErr == nil &&
			(st == "" || st == "ok" || st == "error") && checkJSONContentType(contentType) == nil &&
			int64(len(body)) <= s.cfg.MaxBodyBytes && json.Valid(body)
		if valid != stored {
			t.Fatalf("valid input %v but StoreReply called %v (status %d: %s)", valid, stored, w.Code, w.Body)
		}
		if w.Code == http.StatusRequestEntityTooLarge && int64(len(body)) <= s.cfg.MaxBodyBytes {
			t.Fatalf("413 for a %d-byte body", len(body))
		}
		if !stored {
			if w.Code != 400 && w.Code != 413 && w.Code != 415 {
				t.Fatalf("status %d without StoreReply", w.Code)
			}
			return
		}

		in := gw.replies[0]
		if in.CorrelationID != corr || in.Source != "http" || in.Failed != (st == "error") {
			t.Fatalf("stored %+v for Correlation-ID %q, Correl-ID %q, Reply-Status %q", in, corrID, correlID, status)
		}
		if id, err := parseUUID(in.MessageID); err != nil || id == uuid.Nil || id.String() != in.MessageID {
			t.Fatalf("stored message id %q", in.MessageID)
		}
		if messageID != "" && in.MessageID != strings.ToLower(strings.TrimSpace(messageID)) {
			t.Fatalf("Message-ID %q stored as %q", messageID, in.MessageID)
		}
		if in.Time < 1 || in.Time > maxTime || (timeH == "" && in.Time != fuzzClock.UnixMilli()) {
			t.Fatalf("Time %q stored as %d", timeH, in.Time)
		}
		if !bytes.Equal(in.Body, body) {
			t.Fatalf("stored body %q for %q", in.Body, body)
		}

		outcome := replyModes[m%len(replyModes)]
		want := map[correlation.Outcome]int{correlation.OutcomeStored: 200, correlation.OutcomeDuplicate: 200,
			correlation.OutcomeUnknown: 404, correlation.OutcomeLate: 410, correlation.OutcomeClosed: 410, "": 503}[outcome]
		if w.Code != want {
			t.Fatalf("outcome %q answered %d, want %d", outcome, w.Code, want)
		}
		if w.Code == http.StatusOK {
			var got replyOutcome
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.Outcome != string(outcome) {
				t.Fatalf("answer %s (%v) for outcome %q", w.Body, err, outcome)
			}
		}
	})
}

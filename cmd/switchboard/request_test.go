package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/client"
	"github.com/switchboard-gw/switchboard/internal/testresponder"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/responder"
)

// cliResult is what a run of request or get wrote, and its exit status.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs `switchboard args...` in process, as main would, with stdin,
// stdout captured (a terminal when tty) and no environment but env.
func runCLI(t *testing.T, tty bool, stdin string, env map[string]string, args ...string) cliResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := cliIO{stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr, tty: tty}
	getenv := func(k string) string { return env[k] }
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var err error
	switch args[0] {
	case "request":
		err = runRequest(ctx, args[1:], getenv, c)
	case "get":
		err = runGet(ctx, args[1:], getenv, c)
	default:
		t.Fatalf("runCLI runs request and get, not %s", args[0])
	}
	r := cliResult{}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		r.code = exitStatus(&stderr, err)
	}
	r.stdout, r.stderr = stdout.String(), stderr.String()
	return r
}

// progressFractions are what the responder reports on cli.progress before
// it replies.
var progressFractions = []float64{0.25, 0.5, 0.75}

// startCLIResponder serves cli.# in process:
//
//   - cli.echo replies {"echo": <body>} at once;
//   - cli.progress reports progressFractions, then replies {"done": true};
//   - cli.fail fails (replies with an error);
//   - cli.hold replies only when the test ends.
func startCLIResponder(t *testing.T, amqpURL string, n testsvc.Names) {
	t.Helper()
	quit := make(chan struct{})
	handle := func(ctx context.Context, req responder.Request) (any, error) {
		switch req.RoutingKey {
		case "cli.echo":
			return map[string]json.RawMessage{"echo": req.Body}, nil
		case "cli.progress":
			for _, f := range progressFractions {
				if err := responder.Progress(ctx, f, fmt.Sprintf("step %v", f)); err != nil {
					return nil, fmt.Errorf("report progress: %w", err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			return map[string]bool{"done": true}, nil
		case "cli.fail":
			return nil, errors.New("the flux capacitor is out of flux")
		case "cli.hold":
			select {
			case <-quit:
				return nil, errors.New("test over")
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return nil, fmt.Errorf("unexpected routing key %s", req.RoutingKey)
	}
	testresponder.Start(t, responder.Config{
		AMQPURL: amqpURL, Exchange: n.Exchange, EventsExchange: n.EventsExchange,
		Queue: n.Queue("cli"), Patterns: []string{"cli.#"}, AppID: "cli-test",
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, handle)
	t.Cleanup(func() { close(quit) }) // runs first: frees the held handlers
}

// decodeRecord decodes one line of JSON output as a record.
func decodeRecord(t *testing.T, line string) map[string]any {
	t.Helper()
	var rec map[string]any
	require.NoError(t, json.Unmarshal([]byte(line), &rec), "a JSON record: %q", line)
	return rec
}

// oneLine requires out to be one line and returns it.
func oneLine(t *testing.T, out string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 1, "one JSON document on one line: %q", out)
	return lines[0]
}

// TestRequestAndGet runs request and get against one real gateway and
// responder, started once for all the subtests, which run in parallel on
// requests of their own.
func TestRequestAndGet(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	gw := start(t, env(dbURL, amqpURL, names), "serve")
	startCLIResponder(t, amqpURL, names)
	url := "--url=http://" + gw.addr
	// The gateway is found through the environment as well.
	viaEnv := map[string]string{"SWITCHBOARD_URL": "http://" + gw.addr}

	t.Run("NoWaitPrintsTheRecordAsJSON", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, false, "", nil, "request", "/cli/hold", url, "-d", `{"n": 1}`)
		require.Zero(t, r.code, r.stderr)
		require.Empty(t, r.stderr)
		rec := decodeRecord(t, oneLine(t, r.stdout))
		require.Contains(t, []any{"queued", "pending"}, rec["status"])
		require.Equal(t, "cli.hold", rec["routing_key"])
		require.Equal(t, map[string]any{"n": 1.0}, rec["request"])
		require.Nil(t, rec["reply"])
		// The record as the API answers it: the same fields.
		res, api := httpDo(t, "GET", "http://"+gw.addr+"/v1/requests/"+rec["id"].(string), nil, "")
		require.Equal(t, 200, res.StatusCode)
		for k := range api {
			require.Contains(t, rec, k)
		}
		for k := range rec {
			require.Contains(t, api, k)
		}
	})

	t.Run("NoWaitOnATerminal", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, true, "", viaEnv, "request", "/cli/hold", "-d", `{"n": 1}`)
		require.Zero(t, r.code, r.stderr)
		require.Regexp(t, `(?m)^id: +[0-9a-f-]{36}$`, r.stdout)
		require.Regexp(t, `(?m)^status: +(queued|pending)$`, r.stdout)
		require.Regexp(t, `(?m)^routing key: +cli\.hold$`, r.stdout)
		require.Regexp(t, `(?m)^deadline: .* \(in \d`, r.stdout)
		require.Contains(t, r.stdout, "request:\n  {\n    \"n\": 1\n  }\n")
		require.NotContains(t, r.stdout, "reply:")
	})

	t.Run("WaitShowsTheReply", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, false, "", nil, "request", "/cli/echo", url, "-d", `{"n": 2}`, "--wait", "20s")
		require.Zero(t, r.code, r.stderr)
		rec := decodeRecord(t, oneLine(t, r.stdout))
		require.Equal(t, "replied", rec["status"])
		require.Equal(t, map[string]any{"echo": map[string]any{"n": 2.0}}, rec["reply"].(map[string]any)["body"])
	})

	t.Run("ExpectAllGathersUntilTheDeadline", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, false, "", nil, "request", "/cli/echo", url, "-d", `{"n": 7}`, "--expect", "all", "--timeout", "1s", "--wait", "20s")
		require.Zero(t, r.code, r.stderr)
		rec := decodeRecord(t, oneLine(t, r.stdout))
		require.Equal(t, "replied", rec["status"])
		require.Nil(t, rec["replies_expected"])
		replies := rec["replies"].([]any)
		require.Len(t, replies, 1)
		require.Equal(t, "cli-test", replies[0].(map[string]any)["from"])

		r = runCLI(t, true, "", nil, "request", "/cli/echo", url, "-d", `{"n": 8}`, "--expect", "ALL", "--timeout", "1", "--wait", "20s")
		require.Zero(t, r.code, r.stderr)
		require.Contains(t, r.stdout, "replies: 1 of all\nfrom cli-test:\n")

		r = runCLI(t, false, "", nil, "request", "/cli/echo", url, "--expect", "0")
		require.Equal(t, exitUsage, r.code)
		require.Contains(t, r.stderr, "want a number from 1 to 100, or all")
	})

	t.Run("WaitOnATerminal", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, true, "", nil, "request", url, "--wait", "20", "cli/echo", "-d", `{"n": 3}`)
		require.Zero(t, r.code, r.stderr)
		require.Regexp(t, `(?m)^status: +replied$`, r.stdout)
		require.Regexp(t, `(?m)^replied: .* \(\d+(\.\d+)?m?s after creation\)$`, r.stdout)
		require.Regexp(t, `(?m)^waited: +\d`, r.stdout)
		require.Contains(t, r.stdout, "reply:\n  {\n    \"echo\": {\n      \"n\": 3\n    }\n  }\n")
	})

	t.Run("BodyFromAFileAndFromStdin", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "body.json")
		require.NoError(t, os.WriteFile(file, []byte("{\"from\": \"file\",\n \"list\": [1, 2]}\n"), 0o600))
		r := runCLI(t, false, "", nil, "request", "/cli/echo", url, "-d", "@"+file, "--wait", "20s")
		require.Zero(t, r.code, r.stderr)
		rec := decodeRecord(t, oneLine(t, r.stdout))
		require.Equal(t, map[string]any{"echo": map[string]any{"from": "file", "list": []any{1.0, 2.0}}},
			rec["reply"].(map[string]any)["body"])

		r = runCLI(t, false, `{"from": "stdin"}`, nil, "request", "/cli/echo", url, "--data", "@-", "--wait", "20s")
		require.Zero(t, r.code, r.stderr)
		rec = decodeRecord(t, oneLine(t, r.stdout))
		require.Equal(t, map[string]any{"echo": map[string]any{"from": "stdin"}}, rec["reply"].(map[string]any)["body"])
	})

	t.Run("FollowPrintsEventsThenTheRecord", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, false, "", nil, "request", "/cli/progress", url, "--follow", "--wait", "30s")
		require.Zero(t, r.code, r.stderr)
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		require.GreaterOrEqual(t, len(lines), len(progressFractions)+1)
		var fractions []float64
		for _, line := range lines[:len(lines)-1] {
			var ev struct {
				Type string `json:"type"`
				Data struct {
					Progress float64 `json:"progress"`
					Message  string  `json:"message"`
				} `json:"data"`
			}
			require.NoError(t, json.Unmarshal([]byte(line), &ev), "an event per line: %q", line)
			require.NotEmpty(t, ev.Type, "a CloudEvent: %q", line)
			if ev.Type == "progress" {
				fractions = append(fractions, ev.Data.Progress)
				require.Equal(t, fmt.Sprintf("step %v", ev.Data.Progress), ev.Data.Message)
			}
		}
		require.Equal(t, progressFractions, fractions, "every progress event, in order")
		rec := decodeRecord(t, lines[len(lines)-1])
		require.Equal(t, "replied", rec["status"], "the record comes last")
		require.Equal(t, map[string]any{"done": true}, rec["reply"].(map[string]any)["body"])
	})

	t.Run("FollowOnATerminalDrawsABar", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, true, "", nil, "request", "/cli/progress", url, "--follow")
		require.Zero(t, r.code, r.stderr)
		t.Logf("terminal output:\n%s", r.stdout)
		last := 0
		for _, want := range []string{"following its events", "[########--", " 25%  step 0.25", " 50%  step 0.5", " 75%  step 0.75",
			"\nstatus:      replied\n", "reply:\n  {\n    \"done\": true\n  }\n"} {
			i := strings.Index(r.stdout[last:], want)
			require.GreaterOrEqual(t, i, 0, "%q after what came before it in:\n%s", want, r.stdout)
			last += i + len(want)
		}
		require.Contains(t, r.stdout, "\r[", "the bar is redrawn in place")
	})

	t.Run("FailedEndsWithExit3", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, false, "", nil, "request", "/cli/fail", url, "--wait", "20s")
		require.Equal(t, exitNoReply, r.code, r.stderr)
		require.Contains(t, r.stderr, "failed")
		rec := decodeRecord(t, oneLine(t, r.stdout))
		require.Equal(t, "failed", rec["status"])
		require.Contains(t, rec["reply"].(map[string]any)["body"].(map[string]any)["error"], "out of flux")
	})

	t.Run("UnroutableEndsWithExit3", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, false, "", nil, "request", "/nobody/listens", url)
		require.Equal(t, exitNoReply, r.code, r.stderr)
		require.Contains(t, r.stderr, "unroutable")
		rec := decodeRecord(t, oneLine(t, r.stdout))
		require.Equal(t, "unroutable", rec["status"], "the kept record is shown")
	})

	t.Run("WaitRunsOutWithExit4", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, false, "", nil, "request", "/cli/hold", url, "--wait", "1s")
		require.Equal(t, exitWaitedOut, r.code, r.stderr)
		require.Contains(t, r.stderr, "still pending after 1s")
		rec := decodeRecord(t, oneLine(t, r.stdout))
		require.Equal(t, "pending", rec["status"])
	})

	t.Run("FollowRunsOutWithExit4", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, false, "", nil, "request", "/cli/hold", url, "--follow", "--wait", "1s")
		require.Equal(t, exitWaitedOut, r.code, r.stderr)
		require.Contains(t, r.stderr, "still pending after 1s")
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		rec := decodeRecord(t, lines[len(lines)-1])
		require.Equal(t, "pending", rec["status"], "the record as it stands comes last")
	})

	t.Run("GetAKnownRequest", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, false, "", nil, "request", "/cli/echo", url, "-d", `{"n": 4}`, "--wait", "20s")
		require.Zero(t, r.code, r.stderr)
		id := decodeRecord(t, oneLine(t, r.stdout))["id"].(string)

		r = runCLI(t, false, "", nil, "get", url, id)
		require.Zero(t, r.code, r.stderr)
		rec := decodeRecord(t, oneLine(t, r.stdout))
		require.Equal(t, id, rec["id"])
		require.Equal(t, "replied", rec["status"])
		require.Equal(t, map[string]any{"echo": map[string]any{"n": 4.0}}, rec["reply"].(map[string]any)["body"])

		r = runCLI(t, true, "", viaEnv, "get", id)
		require.Zero(t, r.code, r.stderr)
		require.Regexp(t, `(?m)^id: +`+id+`$`, r.stdout)
		require.Regexp(t, `(?m)^status: +replied$`, r.stdout)
	})

	t.Run("GetAnUnknownRequest", func(t *testing.T) {
		t.Parallel()
		id := uuid.Must(uuid.NewV7()).String()
		r := runCLI(t, false, "", nil, "get", id, url)
		require.Equal(t, exitFailure, r.code)
		require.Empty(t, r.stdout)
		require.Contains(t, r.stderr, "switchboard get: the gateway answered: Not found (HTTP 404, not-found)\n  ")
	})
}

// TestRequestRefusesBadInput checks that a bad command line is a usage
// error (exit 2) that sends nothing.
func TestRequestRefusesBadInput(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusTeapot)
	}))
	defer srv.Close()
	url := "--url=" + srv.URL
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"BadJSON", []string{"request", "/cli/echo", url, "-d", `{"n": `}, "the body (-d) is not JSON"},
		{"NotJSONAtAll", []string{"request", "/cli/echo", url, "-d", `n=1`}, "is not JSON"},
		{"BadJSONInAFile", []string{"request", "/cli/echo", url, "-d", "@" + writeFile(t, "[1,"), "-wait", "5s"}, "is not JSON"},
		{"NoSuchFile", []string{"request", "/cli/echo", url, "-d", "@/nonexistent/body.json"}, "no such file"},
		{"NoPath", []string{"request", url}, "want one PATH"},
		{"TwoPaths", []string{"request", url, "/a", "/b"}, "want one PATH"},
		{"EmptySegment", []string{"request", url, "/a//b"}, "single slashes"},
		{"UnknownFlag", []string{"request", url, "/a", "--bogus"}, "flag provided but not defined: -bogus"},
		{"BadWait", []string{"request", url, "/a", "--wait", "soon"}, `"soon" is not a duration`},
		{"BadURL", []string{"request", "/a", "--url", "ftp://127.0.0.1/"}, "want an absolute http or https URL"},
		{"NoKeyFile", []string{"request", "/a", url, "--key-file", "/nonexistent/key"}, "key file"},
		{"GetNotAUUID", []string{"get", url, "42"}, `"42" is not a request id`},
		{"GetNoID", []string{"get", url}, "want one request ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, false, "", nil, tc.args...)
			require.Equal(t, exitUsage, r.code, r.stderr)
			require.Contains(t, r.stderr, tc.says)
			require.Contains(t, r.stderr, "-h' for usage")
			require.Empty(t, r.stdout)
		})
	}
	require.Zero(t, calls.Load(), "nothing was sent")

	r := runCLI(t, false, "", nil, "request", "-h")
	require.Zero(t, r.code)
	require.Contains(t, r.stdout, "Exit status:")
	require.Contains(t, r.stdout, "-follow")
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// TestRequestSendsTheKeyAndNeverPrintsIt checks the API key's two sources
// and that an error answer is shown readably, without the key.
func TestRequestSendsTheKeyAndNeverPrintsIt(t *testing.T) {
	t.Parallel()
	const key = "sb_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
	var sent atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent.Store(r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"type": "urn:switchboard:problem:rate-limited", "title": "Too many requests",
			"status": 429, "detail": "the project submits more than 5 requests per second"}`)
	}))
	defer srv.Close()

	r := runCLI(t, false, "", map[string]string{"SWITCHBOARD_API_KEY": key, "SWITCHBOARD_URL": srv.URL}, "request", "/a/b")
	require.Equal(t, exitFailure, r.code)
	require.Equal(t, "Bearer "+key, sent.Load())
	require.Equal(t, "switchboard request: the gateway answered: Too many requests (HTTP 429, rate-limited)\n"+
		"  the project submits more than 5 requests per second\n  try again in 7s\n", r.stderr)
	require.NotContains(t, r.stdout+r.stderr, key)

	keyFile := writeFile(t, key+"\nignored\n")
	r = runCLI(t, true, "", map[string]string{"SWITCHBOARD_API_KEY": "other"}, "get", "--url", srv.URL, "--key-file", keyFile,
		uuid.NewString())
	require.Equal(t, exitFailure, r.code)
	require.Equal(t, "Bearer "+key, sent.Load(), "the key file wins over the environment")
	require.NotContains(t, r.stdout+r.stderr, key)
}

// TestCLIExitStatusOfTheBinary checks that main turns the commands'
// results into the exit statuses they document.
func TestCLIExitStatusOfTheBinary(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"get", "nope"}, exitUsage, `"nope" is not a request id`},
		{[]string{"request", "/a/b", "-d", "{"}, exitUsage, "is not JSON"},
		{[]string{"get", "--url", "http://127.0.0.1:1", uuid.NewString()}, exitFailure, "cannot reach the gateway at http://127.0.0.1:1"},
		{[]string{"keys", "frobnicate"}, exitUsage, `unknown keys command "frobnicate"`},
		{[]string{"no-such-command"}, exitUsage, "unknown command"},
	} {
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = append(os.Environ(), "SWITCHBOARD_TEST_AS_BINARY=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%v", tc.args)
		require.Equal(t, tc.code, ee.ExitCode(), "%v: %s", tc.args, stderr.String())
		require.Equal(t, 1, strings.Count(stderr.String(), tc.says), "said once: %s", stderr.String())
	}
}

func TestRoutingKeyOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want, err string }{
		{"/workflow/create", "workflow.create", ""},
		{"workflow/create", "workflow.create", ""},
		{"/orion/workflow/create", "orion.workflow.create", ""},
		{"workflow.create", "workflow.create", ""},
		{"/ping", "ping", ""},
		{"", "", "empty"},
		{"/", "", "single slashes"},
		{"/a//b", "", "single slashes"},
		{"/a/b/", "", "single slashes"},
		{"/a.b/c", "", "without dots"},
	} {
		got, err := routingKeyOf(tc.in)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got)
	}
}

func TestParseInterspersed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		pos  []string
		d    string
	}{
		{[]string{"/a", "-d", "1"}, []string{"/a"}, "1"},
		{[]string{"-d", "1", "/a"}, []string{"/a"}, "1"},
		{[]string{"/a", "-d", "1", "/b"}, []string{"/a", "/b"}, "1"},
		{[]string{"-d", "1", "--", "/a", "-d", "2"}, []string{"/a", "-d", "2"}, "1"},
		{[]string{}, nil, ""},
	} {
		f := newEnvFlags("t", func(string) string { return "" }, io.Discard)
		var d string
		f.fs.StringVar(&d, "d", "", "")
		pos, err := parseInterspersed(f, tc.args)
		require.NoError(t, err)
		require.Equal(t, tc.pos, pos, "%v", tc.args)
		require.Equal(t, tc.d, d)
	}
}

func TestProgressLine(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	p := &progressLine{w: &out}
	ev := func(typ, data string) client.Event {
		return client.Event{Type: typ, Data: json.RawMessage(`{"type": "` + typ + `", "time": "2026-12-02T08:00:01.5Z", "data": ` + data + `}`)}
	}
	p.event(ev("request.accepted", `{}`))
	p.event(ev("progress", `{"state": "running", "progress": 0.4, "message": "calibrating"}`))
	p.event(ev("note", `{"message": "halfway"}`))
	p.event(ev("progress", `{"progress": 7, "message": "`+strings.Repeat("x", 60)+`"}`))
	p.end()
	bar40 := "[" + strings.Repeat("#", 12) + strings.Repeat("-", 18) + "]  40%  calibrating"
	require.Equal(t, "08:00:01.500  request.accepted\n"+
		"\r"+bar40+"\x1b[K"+
		"\r\x1b[K08:00:01.500  note: halfway\n"+
		"\r"+bar40+"\x1b[K"+
		"\r["+strings.Repeat("#", 30)+"] 100%  "+strings.Repeat("x", 39)+"…\x1b[K\n", out.String())
}

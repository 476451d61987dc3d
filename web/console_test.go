package web_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testresponder"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/responder"
	"github.com/switchboard-gw/switchboard/web"
)

// chromiumPath is where Debian's chromium package puts the browser.
const chromiumPath = "/usr/bin/chromium"

// The gateway binary the browser test runs, built once by TestMain.
var (
	moduleRoot string
	gatewayBin string
	buildErr   error
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if browserAvailable() || os.Getenv("CI") == "true" {
		dir, err := os.MkdirTemp("", "switchboard-web-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "web test:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		gatewayBin, buildErr = testsvc.BuildGateway(dir)
		if moduleRoot, err = filepath.Abs(".."); err != nil { // the tests run in web/
			fmt.Fprintln(os.Stderr, "web test:", err)
			return 1
		}
	}
	return m.Run()
}

func browserAvailable() bool {
	_, err := os.Stat(chromiumPath)
	return err == nil
}

// requireBrowser skips without Chromium, except under CI=true, where the
// browser test must run.
func requireBrowser(t *testing.T) {
	t.Helper()
	if !browserAvailable() {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true: apt-get install -y chromium", chromiumPath)
		}
		t.Skipf("%s not found (apt-get install -y chromium); skipping the browser test", chromiumPath)
	}
}

// gatewayEnv is the environment the gateway binary runs with: the test's,
// but never insecure, whatever the shell running the tests says.
func gatewayEnv(vars ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_INSECURE_NO_AUTH=") {
			env = append(env, kv)
		}
	}
	return append(env, vars...)
}

// startGateway runs `switchboard serve`, with authentication, on a free
// loopback port against the test's own database and broker names, and
// returns its address once it listens and has connected to the broker (or
// fails the test when ctx ends first), and its log so far.
func startGateway(ctx context.Context, t *testing.T, dbURL, amqpURL string, n testsvc.Names) (string, *testsvc.LockedBuffer) {
	t.Helper()
	return testsvc.StartGateway(ctx, t, gatewayBin, testsvc.GatewayEnv(dbURL, amqpURL, n))
}

// apiKeyFormat is what `switchboard keys create` prints: sb_ and 256 bits
// in base64url.
var apiKeyFormat = regexp.MustCompile(`^sb_[A-Za-z0-9_-]{43}$`)

// createKey makes an API key in the default project of the gateway's
// database the way an operator would, with the binary's `keys create`,
// and returns it.
func createKey(ctx context.Context, t *testing.T, dbURL string, scopes ...string) string {
	t.Helper()
	args := []string{"keys", "create", "--project", "default", "--name", "console"}
	for _, s := range scopes {
		args = append(args, "--scope", s)
	}
	cmd := exec.CommandContext(ctx, gatewayBin, args...)
	cmd.Env = gatewayEnv("SWITCHBOARD_DATABASE_URL="+dbURL, "SWITCHBOARD_LOG_FORMAT=json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "switchboard keys create: %s", stderr.String())
	// The details are a column of "label: value" lines; the key's label is
	// key:.
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "key:" {
			require.Regexp(t, apiKeyFormat, f[1], "the key printed")
			return f[1]
		}
	}
	t.Fatalf("switchboard keys create printed no key line:\n%s", out)
	return ""
}

// progressSteps are what the calibrating responder reports before it
// replies.
var progressSteps = []struct {
	fraction float64
	message  string
}{{0.25, "step 1"}, {0.5, "step 2"}, {0.75, "step 3"}}

// progressPause is the responder's pause after each step, as a real one
// would work between reports.
const progressPause = 300 * time.Millisecond

// startResponder runs an in-process responder on test.# that reports
// progressSteps and then replies {"result": "calibrated"}. It goes in
// lockstep with the test: each step, and the reply, waits for a call of
// advance. So the test can check that the page shows each step live,
// before the next one is even sent, with no race on timing.
func startResponder(ctx context.Context, t *testing.T, amqpURL string, n testsvc.Names) (advance func()) {
	t.Helper()
	gate := make(chan struct{})
	// The handler's context outlives Run's (requests in hand are finished),
	// so stopping the test must release a handler that waits.
	quit := make(chan struct{})
	wait := func(ctx context.Context) error {
		select {
		case <-gate:
			return nil
		case <-quit:
			return errors.New("test over")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	calibrate := func(ctx context.Context, req responder.Request) (any, error) {
		for _, s := range progressSteps {
			if err := wait(ctx); err != nil {
				return nil, err
			}
			if err := responder.Progress(ctx, s.fraction, s.message); err != nil {
				return nil, fmt.Errorf("report progress: %w", err)
			}
			time.Sleep(progressPause)
		}
		if err := wait(ctx); err != nil {
			return nil, err
		}
		return map[string]string{"result": "calibrated"}, nil
	}
	testresponder.Start(t, responder.Config{
		AMQPURL: amqpURL, Exchange: n.Exchange, EventsExchange: n.EventsExchange,
		Queue: n.Queue("calibrate"), Patterns: []string{"test.#"}, AppID: "calibrator",
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}, calibrate)
	t.Cleanup(func() { close(quit) }) // runs first: frees the held handlers
	return func() {
		t.Helper()
		select {
		case gate <- struct{}{}:
		case <-time.After(15 * time.Second):
			t.Fatal("the responder did not take the request in 15s")
		case <-ctx.Done():
			t.Fatal("the responder did not take the request in time")
		}
	}
}

// newBrowser starts a headless Chromium for t with a fresh profile and
// every background service that could reach the network turned off, and
// returns a tab's context. Cleanup closes it and kills any child process
// that outlived it.
func newBrowser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.UserDataDir(profile),
		// Belt and braces: no proxy, and no host name resolves, so nothing
		// but the loopback address the test gives can be reached.
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tab, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		if n := killProcessesUsing(profile); n > 0 {
			t.Logf("killed %d Chromium processes that outlived the browser", n)
		}
	})
	require.NoError(t, chromedp.Do(tab), "start Chromium")
	return tab
}

// killProcessesUsing kills the processes started with --user-data-dir=dir
// (Chromium passes it to every child) until none is left, and returns how
// many it killed.
func killProcessesUsing(dir string) int {
	want := []byte("--user-data-dir=" + dir)
	killed := 0
	for quiet, deadline := 0, time.Now().Add(3*time.Second); quiet < 3 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		found := 0
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			for _, arg := range bytes.Split(cmdline, []byte{0}) {
				if bytes.Equal(arg, want) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					found++
					break
				}
			}
		}
		killed += found
		if found == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	return killed
}

// artifactsDir is where screenshots go: $SWITCHBOARD_ARTIFACTS, else a
// directory that lives as long as t.
func artifactsDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("SWITCHBOARD_ARTIFACTS"); dir != "" {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		return dir
	}
	return t.TempDir()
}

func screenshot(t *testing.T, tab context.Context, dir, name string) []byte {
	t.Helper()
	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	require.NoError(t, err, "screenshot %s", name)
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot: %s", path)
	return png
}

// pollJS waits until the JavaScript expression is true in the page.
func pollJS(t *testing.T, tab context.Context, what, expr string, timeout time.Duration) {
	t.Helper()
	_, err := chromedp.Run(tab, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		state, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.querySelector('main').innerText`))
		t.Fatalf("%s: %v\npage text:\n%s", what, err, state)
	}
}

// followState is what the follow panel shows, read from the page.
type followState struct {
	ID        string  `json:"id"`
	Hash      string  `json:"hash"`
	Status    string  `json:"status"`
	Progress  float64 `json:"progress"`
	Reply     string  `json:"reply"`
	Transport string  `json:"transport"`
	// Log is the event log, in order.
	Log []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"log"`
	// Events and ProgressSeen are the console's test hooks: the types the
	// EventSource delivered and the progress fractions shown.
	Events       []string  `json:"events"`
	ProgressSeen []float64 `json:"progressSeen"`
}

const readFollow = `(() => ({
  id: document.getElementById('follow-id').textContent,
  hash: location.hash,
  status: document.getElementById('follow-status').dataset.status,
  progress: document.getElementById('follow-progress').value,
  reply: document.getElementById('follow-reply').textContent,
  transport: window.__transport,
  log: [...document.querySelectorAll('#follow-log [data-testid=event]')].map((li) => ({
    type: li.dataset.type, text: li.querySelector('[data-testid=event-text]').textContent })),
  events: window.__events,
  progressSeen: window.__progress,
}))()`

// TestConsoleInBrowser drives the console in headless Chromium against a
// real gateway, which needs API keys, and a real responder: log in with a
// key made by `switchboard keys create` (after a wrong one is refused),
// submit a request, watch its progress arrive live over Server-Sent Events
// (opened with the read token the submit was answered with) and its reply,
// reload and still be logged in, find the request among the recent ones,
// see the dead letters, and log out. All along, the key goes nowhere but
// the Authorization header: not into a URL, the page, its storage beyond
// the tab's session, the browser's console or the gateway's log.
func TestConsoleInBrowser(t *testing.T) {
	requireBrowser(t)
	require.NoError(t, buildErr, "build the gateway")
	t.Parallel()
	// One deadline bounds the whole test: processes, browser and waits.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	addr, gatewayLog := startGateway(ctx, t, dbURL, amqpURL, names)
	base := "http://" + addr
	// The console's key submits and reads anything; as an admin of the
	// default project (an operator) it also sees the dead letters.
	apiKey := createKey(ctx, t, dbURL, "submit:#", "read:#", "admin")
	advance := startResponder(ctx, t, amqpURL, names)
	tab := newBrowser(t, ctx)
	shots := artifactsDir(t)

	// Everything the page does is watched: console errors, uncaught
	// exceptions and CSP violations, everything it logs, and the URL of
	// every request it makes.
	var mu sync.Mutex
	var problems, logged, urls []string
	watchCtx, stopWatching := context.WithCancel(tab)
	var watchers sync.WaitGroup
	messages := chromedp.Console(watchCtx)
	requests := chromedp.Events(watchCtx, network.RequestWillBeSent)
	watchers.Go(func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			line := fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1)
			mu.Lock()
			logged = append(logged, line)
			if m.IsException() || m.Type == "error" || m.Type == "warning" || strings.Contains(m.Text, "Content Security Policy") {
				problems = append(problems, line)
			}
			mu.Unlock()
		}
	})
	watchers.Go(func() {
		for ev, err := range requests {
			if err != nil {
				return
			}
			mu.Lock()
			urls = append(urls, ev.Request.Method+" "+ev.Request.URL)
			mu.Unlock()
		}
	})
	defer func() {
		stopWatching()
		watchers.Wait()
	}()
	// seen returns the requests the page made so far (method and URL)
	// that match re.
	seen := func(re string) []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, u := range urls {
			if regexp.MustCompile(re).MatchString(u) {
				out = append(out, u)
			}
		}
		return out
	}
	// requireKeyNotInPage checks that the page holds the key nowhere it
	// could leak from: its address, markup or text, a form field, local
	// storage or a cookie.
	requireKeyNotInPage := func(when string) {
		t.Helper()
		where, err := chromedp.Run(tab, chromedp.Evaluate[[]string](fmt.Sprintf(`((key) => {
		  const found = [];
		  if (location.href.includes(key)) found.push('location.href');
		  if (document.documentElement.outerHTML.includes(key)) found.push('markup');
		  if (document.body.innerText.includes(key)) found.push('text');
		  for (const f of document.querySelectorAll('input, textarea')) if (f.value.includes(key)) found.push('field #' + f.id);
		  if (localStorage.length > 0) found.push('localStorage');
		  if (document.cookie !== '') found.push('cookie');
		  return found;
		})(%q)`, apiKey)))
		require.NoError(t, err)
		require.Empty(t, where, "%s: the page holds the key", when)
	}
	const storedKey = `sessionStorage.getItem('switchboard.api-key')`

	// The gateway needs a key, so the console asks for one first, in a
	// password field that no form submission could put into a URL.
	require.NoError(t, chromedp.Do(tab,
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="true"][data-auth="login"] #login-form`)),
	))
	loginOnly, err := chromedp.Run(tab, chromedp.Evaluate[bool](`(() => { const k = document.getElementById('login-key');
	  return k.type === 'password' && k.name === '' && document.activeElement === k &&
	    document.getElementById('nav').hidden && document.getElementById('session').hidden &&
	    ['view-submit', 'view-requests', 'view-dead-letters'].every((v) => document.getElementById(v).hidden); })()`))
	require.NoError(t, err)
	require.True(t, loginOnly, "only the login is shown, its field focused")

	// A wrong key, well formed: the gateway's 401 is shown, and nothing is
	// kept, not even in the field.
	var random [32]byte
	_, err = rand.Read(random[:])
	require.NoError(t, err)
	wrongKey := "sb_" + base64.RawURLEncoding.EncodeToString(random[:])
	require.NoError(t, chromedp.Do(tab,
		chromedp.SendKeys(chromedp.ID("login-key"), wrongKey),
		chromedp.Click(chromedp.ID("login-button")),
	))
	pollJS(t, tab, "the wrong key is refused", `!document.getElementById('login-problem').hidden`, 10*time.Second)
	refused, err := chromedp.Run(tab, chromedp.Evaluate[struct {
		Auth   string `json:"auth"`
		Note   string `json:"note"`
		Title  string `json:"title"`
		Type   string `json:"type"`
		Field  string `json:"field"`
		Stored int    `json:"stored"`
	}](`(() => { const p = document.getElementById('login-problem'); const q = (s) => p.querySelector(s)?.textContent ?? '';
	  return {auth: document.body.dataset.auth, note: document.getElementById('login-note').textContent,
	          title: q('[data-testid=problem-title]'), type: q('[data-testid=problem-type]'),
	          field: document.getElementById('login-key').value, stored: sessionStorage.length}; })()`))
	require.NoError(t, err)
	require.Equal(t, "login", refused.Auth)
	require.Equal(t, "The gateway did not accept this key.", refused.Note)
	require.Equal(t, "401 Unauthorized", refused.Title)
	require.Equal(t, "urn:switchboard:problem:unauthorized", refused.Type)
	require.Empty(t, refused.Field, "the field is cleared")
	require.Zero(t, refused.Stored, "a refused key is not kept")
	screenshot(t, tab, shots, "console-login.png")

	// The key made by `keys create` logs in: it is kept in the tab's
	// sessionStorage, and nowhere in the page.
	require.NoError(t, chromedp.Do(tab,
		chromedp.SendKeys(chromedp.ID("login-key"), apiKey),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-auth="key"] #submit-form`)),
		chromedp.WaitVisible(chromedp.ID("logout-button")),
	))
	stored, err := chromedp.Run(tab, chromedp.Evaluate[string](storedKey))
	require.NoError(t, err)
	require.Equal(t, apiKey, stored, "the key is kept in sessionStorage")
	requireKeyNotInPage("after logging in")

	// Submit.
	require.NoError(t, chromedp.Do(tab,
		chromedp.SendKeys(chromedp.ID("submit-key"), "test.calibrate"),
		chromedp.SetValue(chromedp.ID("submit-body"), "{\n  \"instrument\": \"spectrometer-7\",\n  \"samples\": 3\n}"),
		chromedp.SetValue(chromedp.ID("submit-timeout"), "30"),
	))
	path, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("submit-path")))
	require.NoError(t, err)
	require.Equal(t, "/test/calibrate", path, "the routing key's dots become slashes")
	require.NoError(t, chromedp.Do(tab, chromedp.Click(chromedp.ID("submit-button"))))

	// Follow. Once the page listens, the responder sends each progress step
	// only after the page has shown the one before, and replies only after
	// the page has shown the last: every step arrives live, in order, and
	// the bar reaches 0.75 while the request is still open.
	pollJS(t, tab, "the page opens the request's event stream", `window.__transport === 'stream'`, 10*time.Second)
	for i, s := range progressSteps {
		advance()
		pollJS(t, tab, fmt.Sprintf("the page shows %q live", s.message), fmt.Sprintf(`(() => {
		  const steps = [...document.querySelectorAll('#follow-log [data-type=progress] [data-testid=event-text]')];
		  return steps.length === %d && steps.at(-1).textContent === %q &&
		    document.getElementById('follow-progress').value === %v &&
		    document.getElementById('follow-status').dataset.status === 'pending';
		})()`, i+1, fmt.Sprintf("%d%% · %s", int(s.fraction*100), s.message), s.fraction), 10*time.Second)
	}
	advance()
	// Replied, and the stream done: the status can turn replied on the
	// request.replied event, before the final record (the reply event) has
	// arrived and the console has closed the stream.
	pollJS(t, tab, "the request ends replied and the stream is closed",
		`document.getElementById('follow-status').dataset.status === 'replied' && window.__eventSource === null`, 10*time.Second)
	st, err := chromedp.Run(tab, chromedp.Evaluate[followState](readFollow))
	require.NoError(t, err)
	t.Logf("follow panel: %+v", st)

	id := st.ID
	require.NoError(t, uuid.Validate(id), "the followed id is the request's")
	require.Equal(t, "#/requests/"+id, st.Hash)
	require.Equal(t, "replied", st.Status)
	require.Equal(t, "stream", st.Transport, "updates came over the event stream, not the long-poll fallback")

	var progressTexts []string
	for _, e := range st.Log {
		if e.Type == "progress" {
			progressTexts = append(progressTexts, e.Text)
		}
	}
	require.Equal(t, []string{"25% · step 1", "50% · step 2", "75% · step 3"}, progressTexts, "the progress messages, in order")
	require.Equal(t, []float64{0.25, 0.5, 0.75}, st.ProgressSeen, "the progress bar showed each step")
	require.Equal(t, float64(1), st.Progress, "a replied request's bar is full")

	// The EventSource delivered the events: the progress steps, then the
	// final reply event, after which the console closed it.
	require.NotEmpty(t, st.Events)
	require.Equal(t, "reply", st.Events[len(st.Events)-1], "the last event is the reply")
	var progressEvents int
	for _, typ := range st.Events {
		if typ == "progress" {
			progressEvents++
		}
	}
	require.Equal(t, 3, progressEvents, "the EventSource delivered the three progress events: %v", st.Events)
	closed, err := chromedp.Run(tab, chromedp.Evaluate[bool](`window.__eventSource === null`))
	require.NoError(t, err)
	require.True(t, closed, "the console closed its EventSource on the reply")

	var reply map[string]any
	require.NoError(t, json.Unmarshal([]byte(st.Reply), &reply), "the reply is shown as JSON: %q", st.Reply)
	require.Equal(t, map[string]any{"result": "calibrated"}, reply)
	require.Contains(t, st.Reply, "\n", "the reply is pretty-printed")

	// The stream was opened with the read token the submit was answered
	// with: no other was minted, and the URL holds a token, not the key.
	streamURL := `^GET ` + regexp.QuoteMeta(base+"/v1/requests/"+id+"/events") + `\?access_token=sbt_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`
	require.Len(t, seen(streamURL), 1, "one stream, with a read token: %q", seen(`/events`))
	mintURL := `^POST ` + regexp.QuoteMeta(base+"/v1/requests/"+id+"/read-token") + `$`
	require.Empty(t, seen(mintURL), "the submit's read token was used")

	// What the page shows is what the gateway holds.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/requests/"+id, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var rec struct {
		Status     string          `json:"status"`
		RoutingKey string          `json:"routing_key"`
		Request    json.RawMessage `json:"request"`
	}
	require.NoError(t, json.NewDecoder(res.Body).Decode(&rec))
	res.Body.Close()
	require.Equal(t, "replied", rec.Status)
	require.Equal(t, "test.calibrate", rec.RoutingKey)
	require.JSONEq(t, `{"instrument": "spectrometer-7", "samples": 3}`, string(rec.Request))

	png := screenshot(t, tab, shots, "console.png")
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		docs := filepath.Join(moduleRoot, "docs", "console.png")
		require.NoError(t, os.WriteFile(docs, png, 0o644))
		t.Logf("updated %s", docs)
	}

	// A body that is not JSON is refused in the page, before anything is
	// sent (the end of the test counts the POSTs).
	require.NoError(t, chromedp.Do(tab,
		chromedp.SetValue(chromedp.ID("submit-body"), `{"unterminated": `),
		chromedp.Click(chromedp.ID("submit-button")),
	))
	pollJS(t, tab, "invalid JSON is flagged", `!document.getElementById('submit-body-error').hidden && document.getElementById('submit-body').getAttribute('aria-invalid') === 'true' && document.activeElement.id === 'submit-body'`, 5*time.Second)

	// A request nobody listens for: the problem+json answer is shown, with a
	// link to the record the gateway kept.
	require.NoError(t, chromedp.Do(tab,
		chromedp.SetValue(chromedp.ID("submit-key"), "nobody.listens"),
		chromedp.SetValue(chromedp.ID("submit-body"), `{"hello": "anyone?"}`),
		chromedp.Click(chromedp.ID("submit-button")),
	))
	pollJS(t, tab, "the problem is shown", `!document.getElementById('submit-problem').hidden`, 10*time.Second)
	prob, err := chromedp.Run(tab, chromedp.Evaluate[struct {
		Title  string `json:"title"`
		Type   string `json:"type"`
		Detail string `json:"detail"`
		Link   string `json:"link"`
	}](`(() => { const p = document.getElementById('submit-problem'); const q = (s) => p.querySelector(s)?.textContent ?? '';
	  return {title: q('[data-testid=problem-title]'), type: q('[data-testid=problem-type]'), detail: q('[data-testid=problem-detail]'),
	          link: p.querySelector('a')?.getAttribute('href') ?? ''}; })()`))
	require.NoError(t, err)
	require.Equal(t, "503 Unroutable", prob.Title)
	require.Equal(t, "urn:switchboard:problem:unroutable", prob.Type)
	require.Contains(t, prob.Detail, `no queue is bound for routing key "nobody.listens"`)
	require.Regexp(t, `^#/requests/[0-9a-f-]{36}$`, prob.Link, "a link to the kept record")

	// A reload keeps the session (sessionStorage) and follows the request
	// again. The submit's read token was in the page's memory only, so a
	// fresh one is minted with the key.
	require.NoError(t, chromedp.Do(tab, chromedp.Reload()))
	pollJS(t, tab, "the reload keeps the session and follows the request again", fmt.Sprintf(`document.body.dataset.ready === 'true' &&
	  document.body.dataset.auth === 'key' && location.hash === '#/requests/%s' &&
	  document.getElementById('follow-status').dataset.status === 'replied' && window.__events.at(-1) === 'reply' &&
	  window.__events.filter((e) => e === 'progress').length === 3 && window.__transport === 'stream'`, id), 10*time.Second)
	require.Len(t, seen(mintURL), 1, "a read token was minted for the reloaded page")
	require.Len(t, seen(streamURL), 2, "the stream was opened with it: %q", seen(`/events`))
	requireKeyNotInPage("after the reload")

	// Recent requests, filtered by status and a routing-key prefix; a click
	// on the row follows the request again.
	require.NoError(t, chromedp.Do(tab,
		chromedp.Click(chromedp.ID("nav-requests")),
		chromedp.WaitVisible(chromedp.ID("view-requests")),
		chromedp.SetValue(chromedp.ID("requests-status"), "replied"),
		chromedp.SetValue(chromedp.ID("requests-key"), "test.#"),
		chromedp.Click(chromedp.ID("requests-apply")),
	))
	row := fmt.Sprintf(`#requests-table tr[data-id=%q]`, id)
	pollJS(t, tab, "the request is listed", fmt.Sprintf(`(() => { const t = document.getElementById('requests-table');
	  return t.dataset.state === 'loaded' && t.dataset.query === 'limit=50&status=replied&routing_key=test.%%23' && !!document.querySelector(%q); })()`, row),
		10*time.Second)
	listed, err := chromedp.Run(tab, chromedp.Evaluate[struct {
		Hash     string   `json:"hash"`
		Statuses []string `json:"statuses"`
		Status   string   `json:"status"`
	}](fmt.Sprintf(`({hash: location.hash,
	  statuses: [...document.querySelectorAll('#requests-table tbody tr')].map((tr) => tr.dataset.status),
	  status: document.querySelector(%q).querySelector('.status').textContent})`, row)))
	require.NoError(t, err)
	require.Equal(t, "#/requests?status=replied&routing_key=test.%23", listed.Hash)
	require.Equal(t, "replied", listed.Status)
	for _, s := range listed.Statuses {
		require.Equal(t, "replied", s, "the status filter applies")
	}
	screenshot(t, tab, shots, "console-requests.png")

	// Following it again reads it afresh: the stream replays its history.
	require.NoError(t, chromedp.Do(tab,
		chromedp.Evaluate[chromedp.Void](`window.__events = ['before the click']`),
		chromedp.Click(chromedp.CSS(row+" td")),
	))
	pollJS(t, tab, "a click on the row follows the request",
		fmt.Sprintf(`location.hash === '#/requests/%s' && !document.getElementById('view-submit').hidden &&
		  document.getElementById('follow-status').dataset.status === 'replied' &&
		  document.getElementById('follow-reply').textContent.includes('calibrated') &&
		  !window.__events.includes('before the click') && window.__events.at(-1) === 'reply' &&
		  window.__events.filter((e) => e === 'progress').length === 3`, id),
		10*time.Second)

	// Dead letters: a reply for a request that does not exist is kept as one.
	orphan := uuid.NewString()
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/replies", strings.NewReader(`{"late": "<b>not markup</b>"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Correlation-ID", orphan)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusNotFound, res.StatusCode, "a reply to an unknown request")

	require.NoError(t, chromedp.Do(tab,
		chromedp.Click(chromedp.ID("nav-dead-letters")),
		chromedp.WaitVisible(chromedp.ID("view-dead-letters")),
	))
	deadRow := fmt.Sprintf(`#dead-letters-table tr[data-correlation-id=%q]`, orphan)
	pollJS(t, tab, "the dead letter is listed", fmt.Sprintf(`document.getElementById('dead-letters-table').dataset.state === 'loaded' && !!document.querySelector(%q)`, deadRow), 10*time.Second)
	cells, err := chromedp.Run(tab, chromedp.Evaluate[[]string](fmt.Sprintf(`[...document.querySelector(%q).cells].map((td) => td.textContent)`, deadRow)))
	require.NoError(t, err)
	require.Equal(t, "unknown", cells[1], "reason")
	require.Equal(t, "http", cells[2], "source")
	require.Contains(t, cells[4], `<b>not markup</b>`, "the body is shown as text")
	bold, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll('#dead-letters-table b').length`))
	require.NoError(t, err)
	require.Zero(t, bold, "data never becomes markup")
	screenshot(t, tab, shots, "console-dead-letters.png")

	// A link to a request that does not exist says so.
	unknown := uuid.NewString()
	require.NoError(t, chromedp.Do(tab, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`location.hash = '#/requests/%s'`, unknown))))
	pollJS(t, tab, "an unknown request is a 404 problem",
		`!document.getElementById('follow-problem').hidden && document.querySelector('#follow-problem [data-testid=problem-title]').textContent === '404 Not found' && document.getElementById('follow-status').dataset.status === 'unknown'`,
		10*time.Second)

	// Following the listed request again used the token at hand; every
	// stream the page opened had one.
	require.Len(t, seen(mintURL), 1, "no second token for the same request")
	require.Len(t, seen(streamURL), 3, "%q", seen(`/events`))
	require.Len(t, seen(`^GET .*/events`), 3, "every stream was opened with a read token")

	// Logging out forgets the key and what the session showed, and brings
	// the login back, which a reload keeps.
	require.NoError(t, chromedp.Do(tab,
		chromedp.Click(chromedp.ID("logout-button")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-auth="login"] #login-form`)),
	))
	out, err := chromedp.Run(tab, chromedp.Evaluate[struct {
		Note   string `json:"note"`
		Stored int    `json:"stored"`
		Shown  int    `json:"shown"`
	}](`({note: document.getElementById('login-note').textContent, stored: sessionStorage.length,
	    shown: document.querySelectorAll('#follow-log li, #requests-table tbody tr, #dead-letters-table tbody tr').length +
	      document.getElementById('submit-result').childElementCount})`))
	require.NoError(t, err)
	require.Equal(t, "Logged out: this tab no longer holds the key.", out.Note)
	require.Zero(t, out.Stored, "sessionStorage is empty")
	require.Zero(t, out.Shown, "what the session showed is gone")
	require.NoError(t, chromedp.Do(tab,
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="true"][data-auth="login"] #login-form`)),
	))
	requireKeyNotInPage("after logging out")

	stopWatching()
	watchers.Wait()
	mu.Lock()
	defer mu.Unlock()
	// The browser logs the 503, the 404 and the 401s (the key checks: none
	// at the start and after logging out, the wrong one) above as failed
	// loads; nothing else may show up.
	t.Logf("browser console: %q", problems)
	for _, p := range problems {
		if strings.HasPrefix(p, "error: Failed to load resource") &&
			(strings.Contains(p, "("+base+"/nobody/listens:") || strings.Contains(p, "("+base+"/v1/requests/"+unknown+":") ||
				(strings.Contains(p, "status of 401") && strings.Contains(p, "("+base+"/v1/requests?limit=1:"))) {
			continue
		}
		t.Errorf("console error, exception or CSP violation: %s", p)
	}
	for _, l := range logged {
		require.NotContains(t, l, apiKey, "the browser's console shows the key")
	}
	posts := 0
	for _, u := range urls {
		method, target, _ := strings.Cut(u, " ")
		require.True(t, strings.HasPrefix(target, base+"/"), "the page only talks to the gateway: %s", u)
		require.NotContains(t, u, apiKey, "a URL holds the key")
		require.NotContains(t, u, wrongKey, "a URL holds the wrong key")
		if method == http.MethodPost && target == base+"/test/calibrate" {
			posts++
		}
	}
	require.Equal(t, 1, posts, "one POST /test/calibrate: the invalid body was never sent")
	// The gateway logs neither the key nor a read token (its access log
	// leaves query strings out).
	log := gatewayLog.String()
	require.NotContains(t, log, apiKey, "the gateway's log holds the key")
	require.NotContains(t, log, "sbt_", "the gateway's log holds a read token")
	require.NotContains(t, log, "access_token", "the gateway's log holds a query string")
}

// TestConsoleFallsBackToLongPoll follows a request whose event stream
// fails, against a stand-in for the API, both with a key and on a gateway
// without auth: the console long-polls the record instead (with the key in
// the Authorization header), and shows what the record holds as text,
// never as markup.
func TestConsoleFallsBackToLongPoll(t *testing.T) {
	requireBrowser(t)
	t.Parallel()
	for _, tc := range []struct {
		name     string
		needsKey bool
	}{
		{"with a key", true},
		{"without auth", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testLongPollFallback(t, tc.needsKey)
		})
	}
}

func testLongPollFallback(t *testing.T, needsKey bool) {
	const (
		fakeKey   = "sb_fake0fake1fake2fake3fake4fake5fake6fake7fak"
		fakeToken = "sbt_fake.token"
	)
	id := uuid.NewString()
	record := func(status string, reply any) map[string]any {
		now := time.Now().UnixMilli()
		return map[string]any{"id": id, "routing_key": "fake.job", "status": status, "time": now, "expires_at": now + 60000,
			"reply_to": nil, "request": map[string]string{"note": `<img src=x onerror="window.__pwned=1">`}, "reply": reply, "delivery": nil}
	}
	writeJSON := func(w http.ResponseWriter, status int, contentType string, v any) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	notFound := func(w http.ResponseWriter, detail string) {
		writeJSON(w, http.StatusNotFound, "application/problem+json", map[string]any{
			"type": "urn:switchboard:problem:not-found", "title": "Not found", "status": 404, "detail": detail})
	}
	// authorized answers 401, as the gateway does, a call without the key
	// when one is needed.
	authorized := func(w http.ResponseWriter, r *http.Request) bool {
		if !needsKey || r.Header.Get("Authorization") == "Bearer "+fakeKey {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="switchboard"`)
		writeJSON(w, http.StatusUnauthorized, "application/problem+json", map[string]any{
			"type": "urn:switchboard:problem:unauthorized", "title": "Unauthorized", "status": 401,
			"detail": "this call needs credentials: send an API key as 'Authorization: Bearer <key>'"})
		return false
	}
	var mu sync.Mutex
	var polls, streams, mints int
	var streamQuery string
	var targets []string
	mux := http.NewServeMux()
	mux.Handle("GET /ui/", web.Handler())
	mux.HandleFunc("GET /v1/requests", func(w http.ResponseWriter, r *http.Request) {
		if authorized(w, r) {
			writeJSON(w, http.StatusOK, "application/json", map[string]any{"requests": []any{}})
		}
	})
	mux.HandleFunc("GET /v1/requests/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !authorized(w, r) {
			return
		}
		if r.PathValue("id") != id {
			notFound(w, "no such request")
			return
		}
		if r.URL.Query().Get("wait") != "30" {
			writeJSON(w, http.StatusOK, "application/json", record("pending", nil))
			return
		}
		mu.Lock()
		polls++
		mu.Unlock()
		select {
		case <-time.After(200 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		writeJSON(w, http.StatusOK, "application/json", record("replied", map[string]any{
			"message_id": uuid.NewString(), "correlation_id": id, "time": time.Now().UnixMilli(),
			"body": map[string]string{"answer": `<script>window.__pwned=2</script>`}}))
	})
	mux.HandleFunc("POST /v1/requests/{id}/read-token", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		mints++
		mu.Unlock()
		switch {
		case !needsKey:
			notFound(w, "this gateway mints no read tokens")
		case !authorized(w, r):
		case r.PathValue("id") != id:
			notFound(w, "no such request")
		default:
			writeJSON(w, http.StatusOK, "application/json", map[string]any{
				"token": fakeToken, "expires_at": time.Now().Add(15 * time.Minute).UnixMilli()})
		}
	})
	mux.HandleFunc("GET /v1/requests/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		streams++
		streamQuery = r.URL.RawQuery
		mu.Unlock()
		writeJSON(w, http.StatusServiceUnavailable, "application/problem+json", map[string]any{
			"type": "urn:switchboard:problem:unavailable", "title": "Unavailable", "status": 503, "detail": "no stream today"})
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		targets = append(targets, r.Method+" "+r.URL.String())
		mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tab := newBrowser(t, ctx)
	require.NoError(t, chromedp.Do(tab, chromedp.Navigate(srv.URL+"/ui/#/requests/"+id)))
	if needsKey {
		// The login comes first; the link's request is followed after it.
		require.NoError(t, chromedp.Do(tab,
			chromedp.WaitVisible(chromedp.CSS(`body[data-ready="true"][data-auth="login"] #login-form`)),
			chromedp.SendKeys(chromedp.ID("login-key"), fakeKey),
			chromedp.Click(chromedp.ID("login-button")),
		))
	} else {
		// A gateway without auth asks for no key, and there is none to
		// log out of.
		pollJS(t, tab, "no login without auth", `document.body.dataset.ready === 'true' && document.body.dataset.auth === 'open' &&
		  document.getElementById('view-login').hidden && !document.getElementById('session').hidden &&
		  document.getElementById('logout-button').hidden`, 10*time.Second)
	}
	pollJS(t, tab, "the request ends replied", `document.getElementById('follow-status').dataset.status === 'replied'`, 15*time.Second)
	st, err := chromedp.Run(tab, chromedp.Evaluate[followState](readFollow))
	require.NoError(t, err)
	require.Equal(t, id, st.ID)
	require.Equal(t, "#/requests/"+id, st.Hash)
	require.Equal(t, "poll", st.Transport, "the console fell back to long-polls")
	require.Empty(t, st.Events)
	var reply map[string]string
	require.NoError(t, json.Unmarshal([]byte(st.Reply), &reply))
	require.Equal(t, `<script>window.__pwned=2</script>`, reply["answer"])

	injected, err := chromedp.Run(tab, chromedp.Evaluate[bool](
		`window.__pwned !== undefined || document.querySelectorAll('main img, main script').length > 0`))
	require.NoError(t, err)
	require.False(t, injected, "data never becomes markup")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, streams, "one try of the stream, then long-polls")
	require.GreaterOrEqual(t, polls, 1, "long-polls, each with the key when one is needed")
	if needsKey {
		require.Equal(t, 1, mints, "a read token was minted for the stream")
		require.Equal(t, "access_token="+fakeToken, streamQuery, "the stream was opened with the read token")
	} else {
		require.Zero(t, mints, "no key, no token to mint")
		require.Empty(t, streamQuery, "a stream without auth needs no token")
	}
	for _, target := range targets {
		require.NotContains(t, target, fakeKey, "a URL holds the key")
	}
}

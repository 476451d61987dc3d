package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/migrations"
	"github.com/switchboard-gw/switchboard/webhook/signature"
)

// The test binary doubles as the switchboard binary: run with
// SWITCHBOARD_TEST_AS_BINARY=1 it executes main, so these tests start real
// `switchboard serve` and `switchboard echo` processes without a build step.
func TestMain(m *testing.M) {
	if os.Getenv("SWITCHBOARD_TEST_AS_BINARY") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// proc is a running switchboard subcommand.
type proc struct {
	cmd  *exec.Cmd
	addr string // for serve: the HTTP address it listens on
	mu   sync.Mutex
	logs bytes.Buffer
	exit chan error
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "SWITCHBOARD_TEST_AS_BINARY=1"), env...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, exit: make(chan error, 1)}
	addrc := make(chan string, 1)
	readyc := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) != nil {
				continue
			}
			switch entry["msg"] {
			case "listening":
				addrc <- entry["addr"].(string)
			case "broker connected", "echo responder ready":
				select {
				case readyc <- struct{}{}:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() { p.exit <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exit
		if t.Failed() {
			t.Logf("logs of %v:\n%s", args, p.log())
		}
	})
	if args[0] == "serve" || (args[0] == "rules" && len(args) > 1 && args[1] == "run") {
		select {
		case p.addr = <-addrc:
		case err := <-p.exit:
			t.Fatalf("serve exited: %v\n%s", err, p.log())
		case <-time.After(30 * time.Second):
			t.Fatalf("serve did not start:\n%s", p.log())
		}
	}
	select {
	case <-readyc:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s never connected to the broker:\n%s", args[0], p.log())
	}
	return p
}

// stop sends SIGTERM and requires a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.exit:
		require.NoError(t, err, "graceful shutdown must exit 0:\n%s", p.log())
		p.exit <- err // let the cleanup's wait return
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit 20s after SIGTERM:\n%s", p.log())
	}
}

func env(dbURL, amqpURL string, n testsvc.Names) []string {
	return []string{
		"SWITCHBOARD_HTTP_ADDR=127.0.0.1:0",
		"SWITCHBOARD_DATABASE_URL=" + dbURL,
		"SWITCHBOARD_AMQP_URL=" + amqpURL,
		"SWITCHBOARD_REQUEST_EXCHANGE=" + n.Exchange,
		"SWITCHBOARD_REPLY_QUEUE=" + n.ReplyQueue,
		"SWITCHBOARD_EVENTS_EXCHANGE=" + n.EventsExchange,
		"SWITCHBOARD_DEAD_LETTER_EXCHANGE=" + n.DeadLetterExchange,
		"SWITCHBOARD_DEAD_LETTER_QUEUE=" + n.DeadLetterQueue,
		"SWITCHBOARD_EVENT_HISTORY_QUEUE=" + n.EventHistoryQueue,
		"SWITCHBOARD_INSECURE_NO_AUTH=true",
		"SWITCHBOARD_LOG_FORMAT=json",
	}
}

func httpDo(t *testing.T, method, url string, headers map[string]string, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var m map[string]any
	raw, _ := io.ReadAll(res.Body)
	_ = json.Unmarshal(raw, &m)
	return res, m
}

// TestReplyOnOneInstanceWakesWaiterOnAnother runs two `switchboard serve`
// processes on different ports against the same Postgres and RabbitMQ: a
// long-poll held by B is answered by a reply stored through A, promptly,
// by notification.
func TestReplyOnOneInstanceWakesWaiterOnAnother(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	e := env(dbURL, amqpURL, names)
	a := start(t, e, "serve")
	b := start(t, e, "serve")
	start(t, []string{"SWITCHBOARD_AMQP_URL=" + amqpURL, "SWITCHBOARD_REQUEST_EXCHANGE=" + names.Exchange,
		"SWITCHBOARD_ECHO_QUEUE=" + names.Queue("echo"), "SWITCHBOARD_LOG_FORMAT=json"}, "echo", "workflow.#")
	require.NotEqual(t, a.addr, b.addr)

	res, rec := httpDo(t, "POST", "http://"+a.addr+"/workflow/create", map[string]string{"Content-Type": "application/json"},
		`{"Workflow": "46371a70b2cf3953b12b3e0bf8a83ea2"}`)
	require.Equal(t, 202, res.StatusCode)
	id := rec["id"].(string)

	// The echo answers; either instance may consume the reply. B's waiter must see it.
	res, rec = httpDo(t, "GET", "http://"+b.addr+"/v1/requests/"+id+"?wait=20", nil, "")
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "replied", rec["status"])

	// Deterministic cross-instance wake: B waits, the reply is stored through A.
	// A queue that takes the request and never answers it.
	amqpConn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer amqpConn.Close()
	ch, err := amqpConn.Channel()
	require.NoError(t, err)
	silentQueue := names.Queue("silent")
	_, err = ch.QueueDeclare(silentQueue, true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(silentQueue, "silent.#", names.Exchange, false, nil))
	res, rec = httpDo(t, "POST", "http://"+a.addr+"/silent/job", map[string]string{"Content-Type": "application/json"}, `{}`)
	require.Equal(t, 202, res.StatusCode)
	silent := rec["id"].(string)

	type result struct {
		status  string
		elapsed time.Duration
	}
	done := make(chan result, 1)
	go func() {
		startWait := time.Now()
		_, rec := httpDo(t, "GET", "http://"+b.addr+"/v1/requests/"+silent+"?wait=20", nil, "")
		done <- result{rec["status"].(string), time.Since(startWait)}
	}()
	time.Sleep(500 * time.Millisecond) // B is waiting
	res, rec = httpDo(t, "POST", "http://"+a.addr+"/v1/replies", map[string]string{"Content-Type": "application/json", "Correlation-ID": silent}, `{"via": "A"}`)
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "stored", rec["outcome"])
	select {
	case r := <-done:
		require.Equal(t, "replied", r.status)
		require.Less(t, r.elapsed, 5*time.Second, "woken by notification, not by the wait running out")
	case <-time.After(25 * time.Second):
		t.Fatal("the waiter on B was never answered")
	}

	a.stop(t)
	b.stop(t)
}

func TestMigrateCreatesDatabaseAndIsRepeatable(t *testing.T) {
	t.Parallel()
	base := testsvc.Database(t) // a server we can reach; we make a sibling database
	name := "sbtest_mig_" + testsvc.RandomSuffix()
	dbURL := strings.Replace(base, base[strings.LastIndex(base, "/")+1:strings.Index(base, "?")], name, 1)
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), base)
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = conn.Close(context.Background())
		}
	})
	for range 2 {
		var stderr bytes.Buffer
		err := run(context.Background(), []string{"migrate", "-database-url", dbURL}, func(string) string { return "" }, io.Discard, &stderr)
		require.NoError(t, err, stderr.String())
	}
	conn, err := pgx.Connect(context.Background(), dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(context.Background(), `SELECT count(*) FROM switchboard_migrations`).Scan(&n))
	all, err := migrations.All()
	require.NoError(t, err)
	require.Equal(t, len(all), n, "every migration applied once")
}

// Clients that speak HTTP/2 with prior knowledge (no TLS) share one
// connection among many long-polls; each is woken by its own reply.
func TestLongPollsOverUnencryptedHTTP2ShareOneConnection(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	gw := start(t, env(dbURL, amqpURL, names), "serve")

	amqpConn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer amqpConn.Close()
	ch, err := amqpConn.Channel()
	require.NoError(t, err)
	silentQueue := names.Queue("silent")
	_, err = ch.QueueDeclare(silentQueue, true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(silentQueue, "silent.#", names.Exchange, false, nil))

	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: &http.Transport{Protocols: protocols}}
	do := func(method, path string, headers map[string]string, body string) (*http.Response, map[string]any) {
		req, err := http.NewRequest(method, "http://"+gw.addr+path, strings.NewReader(body))
		require.NoError(t, err)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		res, err := h2.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		require.Equal(t, 2, res.ProtoMajor, "spoken over HTTP/2")
		var rec map[string]any
		require.NoError(t, json.NewDecoder(res.Body).Decode(&rec))
		return res, rec
	}

	const n = 40
	ids := make([]string, n)
	for i := range ids {
		res, rec := do("POST", "/silent/job", map[string]string{"Content-Type": "application/json"}, `{}`)
		require.Equal(t, 202, res.StatusCode)
		ids[i] = rec["id"].(string)
	}
	statuses := make(chan string, n)
	for _, id := range ids {
		go func() {
			_, rec := do("GET", "/v1/requests/"+id+"?wait=20", nil, "")
			statuses <- rec["status"].(string)
		}()
	}
	metric := func(name string) float64 {
		res, err := http.Get("http://" + gw.addr + "/metrics")
		require.NoError(t, err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		for line := range strings.SplitSeq(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				require.NoError(t, err)
				return f
			}
		}
		t.Fatalf("no metric %s", name)
		return 0
	}
	require.Eventually(t, func() bool { return metric("switchboard_waiters") == n }, 10*time.Second, 20*time.Millisecond)
	require.LessOrEqual(t, metric("switchboard_http_connections"), 3.0, "the long-polls share a connection")
	for _, id := range ids {
		res, rec := do("POST", "/v1/replies", map[string]string{"Content-Type": "application/json", "Correlation-ID": id}, `{"ok": true}`)
		require.Equal(t, 200, res.StatusCode)
		require.Equal(t, "stored", rec["outcome"])
	}
	for range n {
		select {
		case s := <-statuses:
			require.Equal(t, "replied", s)
		case <-time.After(20 * time.Second):
			t.Fatal("a long-poll over HTTP/2 was never answered")
		}
	}
	gw.stop(t)
}

// TestServeDeliversWebhooks checks the wiring of webhooks in serve: off
// without a secret (Reply-To refused), and with one a reply is POSTed,
// signed, to a receiver the allow-list lets through.
func TestServeDeliversWebhooks(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	got := make(chan *http.Request, 1)
	bodies := make(chan []byte, 1)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
	}))
	defer rcv.Close()
	jsonCT := map[string]string{"Content-Type": "application/json", "Reply-To": rcv.URL + "/hook"}

	// Not inherited from whoever runs the tests (make run's secret, say).
	off := start(t, append(env(dbURL, amqpURL, names), "SWITCHBOARD_WEBHOOK_SECRETS="), "serve")
	res, rec := httpDo(t, "POST", "http://"+off.addr+"/workflow/create", jsonCT, `{}`)
	require.Equal(t, 400, res.StatusCode)
	require.Contains(t, rec["detail"], "no signing secret")
	off.stop(t)

	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	on := start(t, append(env(dbURL, amqpURL, names), "SWITCHBOARD_WEBHOOK_SECRETS="+secret,
		"SWITCHBOARD_WEBHOOK_ALLOW=127.0.0.1"), "serve")
	require.NotContains(t, on.log(), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "the secret is never logged")
	start(t, []string{"SWITCHBOARD_AMQP_URL=" + amqpURL, "SWITCHBOARD_REQUEST_EXCHANGE=" + names.Exchange,
		"SWITCHBOARD_ECHO_QUEUE=" + names.Queue("echo"), "SWITCHBOARD_LOG_FORMAT=json"}, "echo", "workflow.#")
	res, rec = httpDo(t, "POST", "http://"+on.addr+"/workflow/create", jsonCT, `{"n": 1}`)
	require.Equal(t, 202, res.StatusCode)
	select {
	case r := <-got:
		body := <-bodies
		require.Equal(t, rec["id"], r.Header.Get("webhook-id"))
		s, err := signature.ParseSecret(secret)
		require.NoError(t, err)
		require.NoError(t, signature.Verify(r.Header, body, time.Now(), 0, s))
	case <-time.After(20 * time.Second):
		t.Fatalf("no webhook delivered:\n%s", on.log())
	}
	on.stop(t)
}

// TestServeRunsRules checks the wiring of the rules engine in serve: a rule
// file in SWITCHBOARD_RULES_DIR turns a POST to its hook into an event on
// the events exchange, and GET /v1/rules reports it.
func TestServeRunsRules(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	dir := pingRules(t, names.EventsExchange)

	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(names.EventsExchange, "topic", true, false, false, false, nil))
	q := names.Queue("pongs")
	_, err = ch.QueueDeclare(q, true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(q, "pong", names.EventsExchange, false, nil))

	gw := start(t, append(env(dbURL, amqpURL, names), "SWITCHBOARD_RULES_DIR="+dir), "serve")
	res, body := httpDo(t, "POST", "http://"+gw.addr+"/v1/hooks/ping",
		map[string]string{"Content-Type": "application/json", "Event-Type": "ping", "Idempotency-Key": "p-1"}, `{"n": 7}`)
	require.Equal(t, 202, res.StatusCode, "%v\n%s", body, gw.log())

	var got amqp.Delivery
	require.Eventually(t, func() bool {
		d, ok, err := ch.Get(q, true)
		require.NoError(t, err)
		got = d
		return ok
	}, 10*time.Second, 20*time.Millisecond)
	var ev map[string]any
	require.NoError(t, json.Unmarshal(got.Body, &ev))
	require.Equal(t, "pong", ev["type"])
	require.EqualValues(t, 7, ev["data"].(map[string]any)["n"])

	res, body = httpDo(t, "GET", "http://"+gw.addr+"/v1/rules", nil, "")
	require.Equal(t, 200, res.StatusCode)
	rules := body["rules"].([]any)
	require.Len(t, rules, 1)
	require.Equal(t, "pong", rules[0].(map[string]any)["name"])
	require.EqualValues(t, 1, rules[0].(map[string]any)["matches"])
	mres, err := http.Get("http://" + gw.addr + "/metrics")
	require.NoError(t, err)
	metrics, _ := io.ReadAll(mres.Body)
	mres.Body.Close()
	require.Contains(t, string(metrics), `switchboard_rule_matches_total{rule="pong"} 1`)

	// An edit reloads the set, and the reload is audited.
	orig, err := os.ReadFile(dir + "/ping.yaml")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dir+"/ping.yaml", append(orig, []byte("# edited\n")...), 0o644))
	db, err := pgx.Connect(context.Background(), dbURL)
	require.NoError(t, err)
	defer db.Close(context.Background())
	require.Eventually(t, func() bool {
		var n int
		err := db.QueryRow(context.Background(),
			`SELECT count(*) FROM audit_log WHERE action = 'rules.reload' AND outcome = 'ok'`).Scan(&n)
		return err == nil && n >= 1
	}, 15*time.Second, 100*time.Millisecond, "the reload was not audited:\n%s", gw.log())
	gw.stop(t)
}

// TestRulesRunOnItsOwn runs the rules engine as its own process: its hooks
// work, and nothing of the public API is served.
func TestRulesRunOnItsOwn(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	dir := pingRules(t, names.EventsExchange)
	p := start(t, env(dbURL, amqpURL, names), "rules", "run", dir)
	res, body := httpDo(t, "POST", "http://"+p.addr+"/v1/hooks/ping",
		map[string]string{"Content-Type": "application/json", "Event-Type": "ping"}, `{}`)
	require.Equal(t, 202, res.StatusCode, "%v", body)
	res, _ = httpDo(t, "GET", "http://"+p.addr+"/v1/rules", nil, "")
	require.Equal(t, 200, res.StatusCode)
	res, _ = httpDo(t, "GET", "http://"+p.addr+"/healthz", nil, "")
	require.Equal(t, 200, res.StatusCode)
	res, body = httpDo(t, "POST", "http://"+p.addr+"/workflow/create", map[string]string{"Content-Type": "application/json"}, `{}`)
	require.Equal(t, 404, res.StatusCode)
	require.Contains(t, body["detail"], "only the rules engine")
	res, _ = httpDo(t, "GET", "http://"+p.addr+"/v1/requests/0190f3c2-0000-7000-8000-000000000000", nil, "")
	require.Equal(t, 404, res.StatusCode)
	p.stop(t)
}

// pingRules writes a rule set to a new directory: POST /v1/hooks/ping with
// Event-Type ping publishes a pong event (data {"n": the ping's n}) on
// exchange with routing key pong.
func pingRules(t *testing.T, exchange string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(dir+"/ping.yaml", []byte(`
sources:
  ping: {hook: {}}
rules:
  - name: pong
    description: A ping becomes a pong event.
    source: ping
    when: event.type == "ping"
    actions:
      - publish: {exchange: `+exchange+`, routing_key: '"pong"', type: pong, data: '{"n": has(event.data.n) ? event.data.n : 0}'}
`), 0o644))
	return dir
}

// A rule set that does not load stops serve at start, saying why: there is
// no last good set to keep running.
func TestServeRefusesABadRuleSet(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(dir+"/bad.yaml", []byte("rules:\n  - name: x\n    source: nowhere\n"), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "serve")
	cmd.Env = append(append(os.Environ(), "SWITCHBOARD_TEST_AS_BINARY=1"), env(dbURL, amqpURL, names)...)
	cmd.Env = append(cmd.Env, "SWITCHBOARD_RULES_DIR="+dir)
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "serve must not start with a rule set that does not load")
	require.Contains(t, string(out), "bad.yaml")
	require.NotContains(t, string(out), `"msg":"listening"`)
}

// With a certificate configured, serve speaks HTTPS (HTTP/2 included) and
// nothing in plain text.
func TestServeOverTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSignedCert(t)
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	p := start(t, append(env(dbURL, amqpURL, names),
		"SWITCHBOARD_TLS_CERT_FILE="+certFile, "SWITCHBOARD_TLS_KEY_FILE="+keyFile), "serve")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	res, err := client.Get("https://" + p.addr + "/healthz")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, 2, res.ProtoMajor, "HTTP/2 over TLS")
	res, err = http.Get("http://" + p.addr + "/healthz")
	if err == nil {
		res.Body.Close()
		require.Equal(t, http.StatusBadRequest, res.StatusCode, "plain HTTP to the TLS port is refused")
	}
	p.stop(t)
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key, and
// returns their paths and a pool that trusts it.
func selfSignedCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchboard test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = dir+"/cert.pem", dir+"/key.pem"
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

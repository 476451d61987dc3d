package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchboard-gw/switchboard/api"
	"github.com/switchboard-gw/switchboard/auth"
	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/events"
	"github.com/switchboard-gw/switchboard/gateway"
	"github.com/switchboard-gw/switchboard/internal/testresponder"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/responder"
	"github.com/switchboard-gw/switchboard/webhook"
	"github.com/switchboard-gw/switchboard/webhook/signature"
)

// bundle is one test's running gateway on real Postgres and RabbitMQ.
type bundle struct {
	url     string // base URL of the HTTP server
	dbURL   string
	amqpURL string
	names   testsvc.Names
	pool    *pgxpool.Pool
	store   *correlation.Store
	gw      *gateway.Gateway
	api     *api.Server
	http    *http.Client
	history *events.Store
	live    *events.Hub
	keys    *auth.Store
}

type options struct {
	amqpURL  string // default: the test broker
	dbURL    string // default: a fresh database
	names    *testsvc.Names
	apiCfg   func(*api.Config)
	gwCfg    func(*gateway.Config)
	noBroker bool // do not wait for the broker connection
	// webhooks, when set, runs a webhook dispatcher so configured. Without
	// it Reply-To is still accepted (and deliveries are made, pending) but
	// nothing is sent.
	webhooks func(*webhook.Config)
	// auth, when set, puts projects and API keys in front of the API with
	// these limits; without it every call is an operator's.
	auth *auth.Limits
	// tracing, when set, traces the API, the gateway and the webhook
	// dispatcher with it.
	tracing trace.TracerProvider
	// logger replaces the test logger (see testLogger).
	logger *slog.Logger
	// blobs turns the claim check on, with the store keeping the blobs.
	blobs bool
}

// testWebhookSecret signs the tests' webhooks.
const testWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// loopbackPolicy lets the tests' webhook receivers on 127.0.0.1 through
// the SSRF guard; nothing else is.
var loopbackPolicy = webhook.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}

// noDNS resolves nothing: a test never looks a name up on the network.
type noDNS struct{}

func (noDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	return nil, &net.DNSError{Err: "tests resolve no names", Name: host, IsNotFound: true}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("SWITCHBOARD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func setup(t *testing.T, opts options) *bundle {
	t.Helper()
	b := &bundle{dbURL: opts.dbURL, amqpURL: testsvc.AMQPURL(t)}
	if b.dbURL == "" {
		b.dbURL = testsvc.Database(t)
	}
	if opts.names != nil {
		b.names = *opts.names
	} else {
		b.names = testsvc.BrokerNames(t)
	}
	brokerURL := b.amqpURL
	if opts.amqpURL != "" {
		brokerURL = opts.amqpURL
	}
	logger := testLogger(t)
	if opts.logger != nil {
		logger = opts.logger
	}

	ctx, cancel := context.WithCancel(context.Background())
	pool, err := pgxpool.New(ctx, b.dbURL)
	require.NoError(t, err)
	b.pool = pool
	b.store = correlation.NewStore(pool, logger)

	gcfg := gateway.DefaultConfig()
	gcfg.AMQPURL = brokerURL
	gcfg.RequestExchange = b.names.Exchange
	gcfg.ReplyQueue = b.names.ReplyQueue
	gcfg.EventsExchange = b.names.EventsExchange
	gcfg.DeadLetterExchange = b.names.DeadLetterExchange
	gcfg.DeadLetterQueue = b.names.DeadLetterQueue
	gcfg.EventHistoryQueue = b.names.EventHistoryQueue
	gcfg.SweepInterval = 200 * time.Millisecond
	gcfg.RelayInterval = 200 * time.Millisecond
	gcfg.ReconnectMin = 50 * time.Millisecond
	gcfg.ReconnectMax = 500 * time.Millisecond
	gcfg.ConfirmTimeout = 2 * time.Second
	if opts.gwCfg != nil {
		opts.gwCfg(&gcfg)
	}
	reg := prometheus.NewRegistry()
	b.gw, err = gateway.New(gcfg, b.store, gateway.NewMetrics(reg), logger)
	require.NoError(t, err)

	acfg := api.DefaultConfig()
	acfg.MaxWait = 15 * time.Second
	if opts.apiCfg != nil {
		opts.apiCfg(&acfg)
	}
	b.api, err = api.New(acfg, b.gw, b.store, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), gateway.NewID, logger)
	require.NoError(t, err)
	b.api.SetMetrics(api.NewMetrics(reg))
	whStore := webhook.NewStore(pool)
	hooks := api.Webhooks{
		ValidateURL: func(u string) error { _, err := webhook.ValidateURL(u, loopbackPolicy); return err },
		Deliveries:  whStore,
	}
	var dispatcher *webhook.Dispatcher
	if opts.webhooks != nil {
		secret, err := signature.ParseSecret(testWebhookSecret)
		require.NoError(t, err)
		wcfg := webhook.DefaultConfig()
		wcfg.Secrets = []signature.Secret{secret}
		wcfg.Jitter = 0
		wcfg.PollInterval = 100 * time.Millisecond
		opts.webhooks(&wcfg)
		client := webhook.NewClient(webhook.NewGuard(loopbackPolicy, noDNS{}, nil), wcfg.Timeout)
		dispatcher, err = webhook.NewDispatcher(wcfg, pool, b.store, b.gw, client, webhook.NewMetrics(reg), logger)
		require.NoError(t, err)
		hooks.Deliveries, hooks.Nudge = dispatcher.Store(), dispatcher.Nudge
	}
	b.api.SetWebhooks(hooks)
	b.history = events.NewStore(pool, 50, logger)
	b.live = events.NewHub(8, 64)
	b.gw.SetEventSinks(gateway.EventSinks{History: b.history, Live: b.live})
	b.api.SetEvents(api.Events{History: b.history, Live: b.live, Wake: b.gw.WakeRelay,
		Heartbeat: 200 * time.Millisecond, Settle: time.Second})
	b.api.SetCORS([]string{"https://app.example.com"})
	if opts.blobs {
		b.api.SetBlobs(b.store)
	}
	if opts.auth != nil {
		b.keys = auth.NewStore(pool, logger)
		tokens := auth.NewTokens([]byte("a test secret of thirty-two bytes"), time.Minute)
		audit := auth.NewAudit(pool)
		b.api.SetAuth(api.Auth{
			Middleware: auth.Middleware(auth.MiddlewareConfig{Store: b.keys, Tokens: tokens, Logger: logger,
				Open: []string{"/healthz", "/readyz", "/metrics"}}),
			Tokens:  tokens,
			Limiter: auth.NewLimiter(*opts.auth, nil),
			Audit:   audit,
			Routes: func(r chi.Router) {
				b.keys.Routes(r, audit)
				audit.Routes(r)
			},
		})
	}
	if opts.tracing != nil {
		b.gw.SetTracerProvider(opts.tracing)
		b.api.SetTracerProvider(opts.tracing)
		if dispatcher != nil {
			dispatcher.SetTracerProvider(opts.tracing)
		}
	}
	srv := httptest.NewServer(b.api.Handler())
	b.url = srv.URL
	b.http = srv.Client()

	listening := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = b.store.Listen(ctx, func() { once.Do(func() { close(listening) }) }) }()
	go func() { defer wg.Done(); _ = b.gw.Run(ctx) }()
	if dispatcher != nil {
		wg.Add(1)
		go func() { defer wg.Done(); _ = dispatcher.Run(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); b.history.Listen(ctx) }()
	t.Cleanup(func() {
		b.api.Drain()
		srv.Close()
		cancel()
		wg.Wait()
		pool.Close()
	})
	<-listening
	if !opts.noBroker {
		require.Eventually(t, b.gw.Connected, 10*time.Second, 10*time.Millisecond, "gateway never connected to the broker")
	}
	return b
}

// echo starts a responder SDK echo on the test's exchange for patterns.
func (b *bundle) echo(t *testing.T, queue string, patterns ...string) {
	t.Helper()
	b.responder(t, queue, func(_ context.Context, req responder.Request) (any, error) {
		return map[string]any{"result": "Everything is awesome", "request": req.Body}, nil
	}, patterns...)
}

func (b *bundle) responder(t *testing.T, queue string, h responder.Handler, patterns ...string) {
	t.Helper()
	b.responderWith(t, responder.Config{Queue: queue, Patterns: patterns}, h)
}

// responderWith starts a responder SDK configured as cfg, on the test's
// broker names (cfg.Queue is given the test's prefix) and fetching
// claimed bodies from the test's gateway.
func (b *bundle) responderWith(t *testing.T, cfg responder.Config, h responder.Handler) {
	t.Helper()
	cfg.AMQPURL, cfg.Exchange, cfg.EventsExchange = b.amqpURL, b.names.Exchange, b.names.EventsExchange
	cfg.Queue, cfg.Logger, cfg.GatewayURL = b.names.Queue(cfg.Queue), testLogger(t), b.url
	testresponder.Start(t, cfg, h)
}

// bindQueue declares a durable queue under the test's prefix bound to the
// request exchange, so the test can read what the gateway published.
func (b *bundle) bindQueue(t *testing.T, name string, patterns ...string) (*amqp.Channel, string) {
	t.Helper()
	conn, err := amqp.Dial(b.amqpURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(b.names.Exchange, "topic", true, false, false, false, nil))
	q := b.names.Queue(name)
	_, err = ch.QueueDeclare(q, true, false, false, false, nil)
	require.NoError(t, err)
	for _, p := range patterns {
		require.NoError(t, ch.QueueBind(q, p, b.names.Exchange, false, nil))
	}
	return ch, q
}

// getOne waits for one message on q.
func getOne(t *testing.T, ch *amqp.Channel, q string) amqp.Delivery {
	t.Helper()
	var d amqp.Delivery
	require.Eventually(t, func() bool {
		m, ok, err := ch.Get(q, false)
		require.NoError(t, err)
		if ok {
			d = m
		}
		return ok
	}, 10*time.Second, 10*time.Millisecond, "no message on %s", q)
	return d
}

// reply publishes a raw AMQP reply the way any responder would.
func (b *bundle) reply(t *testing.T, correlationID string, body string, headers amqp.Table) {
	t.Helper()
	conn, err := amqp.Dial(b.amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Confirm(false))
	c, err := ch.PublishWithDeferredConfirm("", b.names.ReplyQueue, false, false, amqp.Publishing{
		CorrelationId: correlationID, MessageId: testsvc.RandomSuffix(), ContentType: "application/json",
		DeliveryMode: amqp.Persistent, Headers: headers, Body: []byte(body),
	})
	require.NoError(t, err)
	require.True(t, c.Wait(), "reply not confirmed")
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

func (b *bundle) do(t *testing.T, method, path string, headers map[string]string, body string) response {
	t.Helper()
	return b.doCtx(t, context.Background(), method, path, headers, body)
}

func (b *bundle) doCtx(t *testing.T, ctx context.Context, method, path string, headers map[string]string, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.url+path, rd)
	require.NoError(t, err)
	for k, v := range headers {
		req.Header[http.CanonicalHeaderKey(k)] = []string{v}
	}
	res, err := b.http.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: out}
}

var jsonCT = map[string]string{"Content-Type": "application/json"}

func with(h map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// count runs a count(*) query against the test database.
func (b *bundle) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, b.pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func requireProblem(t *testing.T, r response, status int, kind string) {
	t.Helper()
	require.Equal(t, status, r.status, "body: %s", r.body)
	require.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
	p := r.json(t)
	require.Equal(t, "urn:switchboard:problem:"+kind, p["type"], "body: %s", r.body)
	require.EqualValues(t, status, p["status"])
	require.NotEmpty(t, p["title"])
	require.NotEmpty(t, p["detail"])
}

func newRequest(ctx context.Context, url string) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
}

type gatewayConfig = gateway.Config

// key creates an API key of project (created if needed) with scopes, and
// returns the Authorization header that carries it.
func (b *bundle) key(t *testing.T, project string, scopes ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	p, err := b.keys.ProjectByName(ctx, project)
	if errors.Is(err, auth.ErrNotFound) {
		p, err = b.keys.CreateProject(ctx, project)
	}
	require.NoError(t, err)
	sc, err := auth.ParseScopes(scopes)
	require.NoError(t, err)
	_, secret, err := b.keys.CreateKey(ctx, auth.NewKey{ProjectID: p.ID, Name: "test", Scopes: sc})
	require.NoError(t, err)
	return map[string]string{"Authorization": "Bearer " + secret}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboard-gw/switchboard/api"
	"github.com/switchboard-gw/switchboard/auth"
	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/events"
	"github.com/switchboard-gw/switchboard/gateway"
	"github.com/switchboard-gw/switchboard/migrations"
	"github.com/switchboard-gw/switchboard/rules"
	"github.com/switchboard-gw/switchboard/web"
	"github.com/switchboard-gw/switchboard/webhook"
)

func runServe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := loadServeConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, false, stderr)
}

// serve runs the gateway. With rulesOnly (switchboard rules run) it is an
// instance of the gateway — it publishes, stores replies, relays the
// outboxes — whose HTTP side answers only the rule engine's paths and the
// operational ones, so rules can run apart from the public API.
func serve(ctx context.Context, cfg serveConfig, rulesOnly bool, stderr io.Writer) error {
	logger := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	logger.Info("starting switchboard", append(cfg.logAttrs(), "rules_only", rulesOnly)...)
	tracing, err := startTracing(ctx, os.Getenv, logger)
	if err != nil {
		return err
	}
	defer tracing.shutdown(logger) // last: after every worker that makes spans has stopped

	if err := ensureDatabase(ctx, cfg.DatabaseURL, logger); err != nil {
		return err
	}
	if cfg.Migrate {
		if err := migrate(ctx, cfg.DatabaseURL, logger); err != nil {
			return err
		}
	}

	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("parse database url: %w", err)
	}
	poolCfg.MaxConns = int32(cfg.DBMaxConns)
	if !cfg.LifecycleEvents {
		// Read by the lifecycle-event triggers (migrations/0004_events.sql).
		poolCfg.ConnConfig.RuntimeParams["switchboard.lifecycle_events"] = "off"
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("open database pool: %w", err)
	}
	defer pool.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	store := correlation.NewStore(pool, logger)
	registerStoreGauges(reg, store)
	gw, err := gateway.New(cfg.Gateway, store, gateway.NewMetrics(reg), logger)
	if err != nil {
		return err
	}
	srv, err := api.New(cfg.API, gw, store, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), gateway.NewID, logger)
	if err != nil {
		return err
	}
	registerMetrics(reg, pool, store, srv)
	if err := setUpAuth(ctx, cfg, pool, srv, reg, logger); err != nil {
		return err
	}

	history := events.NewStore(pool, cfg.EventsPerRequest, logger)
	live := events.NewHub(cfg.MaxSubscribers, 256)
	gw.SetEventSinks(gateway.EventSinks{History: history, Live: live})
	srv.SetEvents(api.Events{History: history, Live: live, Wake: gw.WakeRelay})
	srv.SetCORS(cfg.CORSOrigins)
	srv.SetBlobs(store) // large request bodies go by claim check, kept in Postgres
	if cfg.Console {
		srv.SetConsole(web.Handler())
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_event_subscribers", Help: "Topic subscriptions (GET /v1/events) served by this instance.",
	}, func() float64 { return float64(live.Count()) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "switchboard_event_subscribers_dropped_total", Help: "Topic subscribers disconnected because they fell behind.",
	}, func() float64 { return float64(live.DroppedTotal()) }))

	var runner *rules.Runner
	if cfg.RulesDir != "" {
		if runner, err = newRulesRunner(cfg, pool, store, gw, auth.NewAudit(pool), reg, logger); err != nil {
			return err
		}
		srv.SetRules(runner)
	}

	var dispatcher *webhook.Dispatcher
	if cfg.WebhooksOn() {
		client := webhook.NewClient(webhook.NewGuard(cfg.WebhookPolicy, nil, nil), cfg.Webhooks.Timeout)
		dispatcher, err = webhook.NewDispatcher(cfg.Webhooks, pool, store, gw, client, webhook.NewMetrics(reg), logger)
		if err != nil {
			return err
		}
		srv.SetWebhooks(api.Webhooks{
			ValidateURL: func(u string) error { _, err := webhook.ValidateURL(u, cfg.WebhookPolicy); return err },
			Deliveries:  dispatcher.Store(),
			Nudge:       dispatcher.Nudge,
		})
	} else {
		logger.Warn("webhooks are off: no SWITCHBOARD_WEBHOOK_SECRETS; requests with Reply-To are refused")
	}

	tracing.attach(gw, srv, dispatcher)
	inner, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ln := newLimitListener(inner, cfg.MaxConnections)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "switchboard_http_connections", Help: "Open client connections (at most SWITCHBOARD_MAX_CONNECTIONS).",
	}, func() float64 { return float64(ln.open()) }))
	// HTTP/1.1, and HTTP/2 without TLS for clients that speak it with prior
	// knowledge: many long-polls then share one connection.
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if cfg.TLSCertFile != "" {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	httpServer := &http.Server{
		Handler:           wrapHandler(httpHandler(srv.Handler(), rulesOnly)),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		Protocols:         protocols,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 1000},
	}

	// The messaging side runs on its own context so it outlives the HTTP
	// server during shutdown: in-flight submits still get their confirms.
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); _ = store.Listen(bgCtx, nil) }()
	go func() { defer bg.Done(); _ = gw.Run(bgCtx) }()
	bg.Add(1)
	go func() { defer bg.Done(); history.Listen(bgCtx) }()
	if dispatcher != nil {
		bg.Add(1)
		go func() { defer bg.Done(); _ = dispatcher.Run(bgCtx) }()
	}
	if runner != nil {
		// A rule set that does not load at start is fatal (there is no
		// last good set to keep), and hooks must exist before requests come.
		runErr := make(chan error, 1)
		bg.Add(2)
		go func() { defer bg.Done(); runErr <- runner.Run(bgCtx) }()
		go func() { defer bg.Done(); purgeFirings(bgCtx, rules.NewPGFirings(pool), cfg.Gateway.Retention, logger) }()
		select {
		case <-runner.Loaded():
		case err := <-runErr:
			stopBackground()
			bg.Wait()
			return fmt.Errorf("rules: %w", err)
		}
	}

	serveErr := make(chan error, 1)
	if cfg.TLSCertFile != "" {
		go func() { serveErr <- httpServer.ServeTLS(ln, cfg.TLSCertFile, cfg.TLSKeyFile) }()
	} else {
		go func() { serveErr <- httpServer.Serve(ln) }()
	}
	logger.Info("listening", "addr", ln.Addr().String(), "tls", cfg.TLSCertFile != "")

	select {
	case <-ctx.Done():
		logger.Info("shutting down", "delay", cfg.ShutdownDelay)
	case err := <-serveErr:
		stopBackground()
		bg.Wait()
		return fmt.Errorf("http server: %w", err)
	}

	// Ordered: say not ready and keep serving for the shutdown delay, so
	// load balancers stop sending new calls here; stop taking requests and
	// answer the long-polls; finish in-flight handlers; then stop the
	// consumers (unacked replies go back to the queue), the relay, the
	// sweeper and the webhook dispatcher (attempts in flight finish and are
	// recorded); then close the pool.
	srv.Stopping()
	if cfg.ShutdownDelay > 0 {
		select {
		case <-time.After(cfg.ShutdownDelay):
		case err := <-serveErr:
			logger.Error("http server stopped during the shutdown delay", "error", err)
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	srv.Drain()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		logger.Warn("http shutdown incomplete; closing connections", "error", err)
		_ = httpServer.Close()
	}
	stopBackground()
	done := make(chan struct{})
	go func() { bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-shutdownCtx.Done():
		logger.Warn("background workers did not stop in time")
	}
	logger.Info("stopped")
	return nil
}

func runMigrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	f := newEnvFlags("migrate", getenv, stderr)
	var dbURL, logLevel, logFormat string
	f.str(&dbURL, "database-url", "SWITCHBOARD_DATABASE_URL", defaultDatabaseURL, "Postgres URL; the database is created if missing")
	f.logFlags(&logLevel, &logFormat)
	if err := f.parse(args); err != nil {
		return err
	}
	level, err := parseLog(logLevel, logFormat)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, level, logFormat)
	if err := ensureDatabase(ctx, dbURL, logger); err != nil {
		return err
	}
	return migrate(ctx, dbURL, logger)
}

func migrate(ctx context.Context, dbURL string, logger *slog.Logger) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect for migrations: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	applied, err := migrations.Up(ctx, conn)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		logger.Info("database schema is up to date")
	} else {
		logger.Info("migrations applied", "versions", applied)
	}
	return nil
}

// ensureDatabase creates the database named in dbURL when it does not exist,
// so a newcomer's first `make run` works on a fresh Postgres.
func ensureDatabase(ctx context.Context, dbURL string, logger *slog.Logger) error {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("parse database url: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		return fmt.Errorf("connect to database: %w", err)
	}
	name := cfg.Database
	admin := cfg.Copy()
	admin.Database = "postgres"
	aconn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to create database %q: %w", name, err)
	}
	defer aconn.Close(ctx)
	_, err = aconn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	switch {
	case err == nil:
		logger.Info("created database", "database", name)
	case errors.As(err, &pgErr) && pgErr.Code == "42P04": // duplicate_database: another process won
	default:
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

// registerStoreGauges exposes what an operator watches during an outage:
// the outbox growing while the broker is away, and the long-polls held.
func registerStoreGauges(reg prometheus.Registerer, store *correlation.Store) {
	outbox := func() correlation.OutboxStats {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, _ := store.Outbox(ctx) // zero when Postgres is away; readyz says why
		return st
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchboard_outbox_depth",
			Help: "Requests committed but not yet confirmed by the broker (status queued)."},
			func() float64 { return float64(outbox().Depth) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchboard_outbox_oldest_seconds",
			Help: "Age of the oldest queued request."},
			func() float64 { return outbox().OldestQueued.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "switchboard_waiters",
			Help: "Long-polls and Prefer: wait calls held by this instance."},
			func() float64 { return float64(store.Waiters()) }),
	)
}

// wrapHandler lets a profiling build (tag pprof) add its endpoints.
var wrapHandler = func(h http.Handler) http.Handler { return h }

// newRulesRunner builds the rules engine: its actions publish and submit
// through the gateway, its http actions go through the webhook SSRF guard,
// firings and dead letters go to Postgres, and the rule directory is
// reloaded on change and on SIGHUP (the last good set keeps running).
func newRulesRunner(cfg serveConfig, pool *pgxpool.Pool, store *correlation.Store, gw *gateway.Gateway,
	audit auth.Auditor, reg prometheus.Registerer, logger *slog.Logger) (*rules.Runner, error) {
	firings := rules.NewPGFirings(pool)
	engine := rules.NewEngine(rules.EngineConfig{}, rules.Deps{
		Publisher: gw, Submitter: gw,
		HTTP:    webhook.NewClient(webhook.NewGuard(cfg.WebhookPolicy, nil, nil), cfg.Webhooks.Timeout),
		Firings: firings, DeadLetters: store,
	}, logger.With("component", "rules"))
	rcfg := rules.DefaultRunnerConfig(cfg.RulesDir)
	rcfg.AMQPURL = cfg.Gateway.AMQPURL
	rcfg.DeadLetterExchange = cfg.Gateway.DeadLetterExchange
	rcfg.Firings = firings
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	rcfg.Signals = hup
	// A reload is an operator's action (an edit, a SIGHUP): audit it under
	// the default project, with no key.
	rcfg.Reloaded = func(files []string, err error) {
		outcome, detail := "ok", map[string]any{"files": files}
		if err != nil {
			outcome, detail["error"] = "error", err.Error()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if aerr := audit.Record(ctx, auth.AuditEntry{ProjectID: auth.DefaultProject, Action: "rules.reload",
			Target: cfg.RulesDir, Outcome: outcome, Detail: detail}); aerr != nil {
			logger.Error("record audit entry", "action", "rules.reload", "error", aerr)
		}
	}
	runner, err := rules.NewRunner(rcfg, engine, logger.With("component", "rules"))
	if err != nil {
		return nil, err
	}
	reg.MustRegister(rules.NewCollector(engine, runner))
	return runner, nil
}

// purgeFirings keeps the rule firings bounded: those older than the
// retention, and beyond the newest 1000 of each rule, are removed hourly.
func purgeFirings(ctx context.Context, firings *rules.PGFirings, retention time.Duration, logger *slog.Logger) {
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		if n, err := firings.Purge(ctx, retention, 1000); err != nil && ctx.Err() == nil {
			logger.Warn("purge rule firings", "error", err)
		} else if n > 0 {
			logger.Info("purged rule firings", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// rulesOnlyPaths are what a rules-only process serves.
var rulesOnlyPaths = []string{"/healthz", "/readyz", "/metrics", "/v1/hooks/", "/v1/rules"}

// httpHandler is h, or with rulesOnly, h restricted to rulesOnlyPaths.
func httpHandler(h http.Handler, rulesOnly bool) http.Handler {
	if !rulesOnly {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, p := range rulesOnlyPaths {
			if r.URL.Path == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(r.URL.Path, p)) ||
				strings.HasPrefix(r.URL.Path, p+"/") {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"type":"urn:switchboard:problem:not-found","title":"Not found","status":404,`+
			`"detail":"this process runs only the rules engine (switchboard rules run)"}`)
	})
}

// setUpAuth puts projects and API keys in front of the API: every call is
// authenticated (unless --insecure-no-auth), browser read tokens are signed
// with a secret all instances share, projects' limits apply, and user
// actions are audited.
func setUpAuth(ctx context.Context, cfg serveConfig, pool *pgxpool.Pool, srv *api.Server,
	reg prometheus.Registerer, logger *slog.Logger) error {
	keys := auth.NewStore(pool, logger)
	tokens, err := auth.LoadTokens(ctx, pool, 15*time.Minute)
	if err != nil {
		return fmt.Errorf("read-token secret: %w", err)
	}
	limiter := auth.NewLimiter(auth.Limits{RPS: cfg.RateRPS, Burst: cfg.RateBurst, MaxWaiters: cfg.MaxWaiters},
		auth.ProjectLimits(pool))
	reg.MustRegister(limiter.Collectors()...)
	audit := auth.NewAudit(pool)
	if cfg.InsecureNoAuth {
		logger.Warn("--insecure-no-auth: every call is served without authentication, as an operator; never do this outside local development")
	} else if n, err := keys.Keys(ctx, uuid.Nil, true); err == nil && len(n) == 0 {
		logger.Warn("no API keys exist yet: every call will be refused; create one with `switchboard keys create --project default --name admin --scope admin --scope 'submit:#' --scope 'read:#'`")
	}
	srv.SetAuth(api.Auth{
		Middleware: auth.Middleware(auth.MiddlewareConfig{Store: keys, Tokens: tokens, Insecure: cfg.InsecureNoAuth,
			Logger: logger, Open: []string{"/healthz", "/readyz", "/metrics", "/ui/", "/ui"}}),
		Tokens:  tokens,
		Limiter: limiter,
		Audit:   audit,
		Routes: func(r chi.Router) {
			keys.Routes(r, audit)
			audit.Routes(r)
		},
	})
	return nil
}

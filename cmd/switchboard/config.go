package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-gw/switchboard/api"
	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/gateway"
	"github.com/switchboard-gw/switchboard/internal/tracelog"
	"github.com/switchboard-gw/switchboard/webhook"
	"github.com/switchboard-gw/switchboard/webhook/signature"
)

// Defaults that work against Postgres and RabbitMQ on their standard local ports.
const (
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/switchboard?sslmode=disable"
	defaultHTTPAddr    = ":8080"
)

// serveConfig is everything `switchboard serve` reads, in one place.
type serveConfig struct {
	HTTPAddr        string
	MaxConnections  int
	DatabaseURL     string
	Migrate         bool
	LogLevel        slog.Level
	LogFormat       string
	ShutdownTimeout time.Duration
	// ShutdownDelay is how long serve keeps serving after SIGTERM, with
	// /readyz answering 503, so load balancers stop sending it new calls
	// before it closes its listener.
	ShutdownDelay time.Duration
	DBMaxConns    int
	API           api.Config
	Gateway       gateway.Config
	// Webhooks are on when at least one signing secret is configured.
	Webhooks      webhook.Config
	WebhookPolicy webhook.Policy
	WebhookAllow  string // the allow-list as configured, for the start-up log
	// Events: the history kept per request, topic subscriptions, lifecycle
	// events and browsers.
	EventsPerRequest int
	MaxSubscribers   int
	LifecycleEvents  bool
	CORSOrigins      []string
	Console          bool
	// RulesDir holds the rule files; empty: no rule engine.
	RulesDir string
	// InsecureNoAuth serves every call without authentication (make run,
	// local development only).
	InsecureNoAuth bool
	// Limits are every project's defaults (0: unlimited).
	RateRPS    float64
	RateBurst  int
	MaxWaiters int
	// TLSCertFile and TLSKeyFile, when set, make the listener HTTPS (with
	// HTTP/2); without them it speaks HTTP/1.1 and HTTP/2 without TLS.
	TLSCertFile, TLSKeyFile string
	// Args are the arguments left after the flags.
	Args []string
}

// WebhooksOn reports whether Reply-To webhooks are delivered.
func (c serveConfig) WebhooksOn() bool { return len(c.Webhooks.Secrets) > 0 }

// envFlags binds flags whose defaults come from the environment.
type envFlags struct {
	fs     *flag.FlagSet
	getenv func(string) string
	errs   []error
}

func newEnvFlags(name string, getenv func(string) string, out io.Writer) *envFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	return &envFlags{fs: fs, getenv: getenv}
}

func (e *envFlags) str(p *string, flagName, env, def, help string) {
	if v := e.getenv(env); v != "" {
		def = v
	}
	e.fs.StringVar(p, flagName, def, help+" (env "+env+")")
}

func (e *envFlags) dur(p *time.Duration, flagName, env string, def time.Duration, help string) {
	if v := e.getenv(env); v != "" {
		d, err := parseDuration(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s: %w", env, err))
		} else {
			def = d
		}
	}
	e.fs.DurationVar(p, flagName, def, help+" (env "+env+")")
}

func (e *envFlags) int(p *int, flagName, env string, def int, help string) {
	if v := e.getenv(env); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s: %q is not an integer", env, v))
		} else {
			def = n
		}
	}
	e.fs.IntVar(p, flagName, def, help+" (env "+env+")")
}

func (e *envFlags) boolean(p *bool, flagName, env string, def bool, help string) {
	if v := e.getenv(env); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("%s: %q is not a boolean", env, v))
		} else {
			def = b
		}
	}
	e.fs.BoolVar(p, flagName, def, help+" (env "+env+")")
}

func (e *envFlags) parse(args []string) error {
	if len(e.errs) > 0 {
		return e.errs[0]
	}
	return e.fs.Parse(args)
}

// parseDuration accepts Go durations (90s, 5m) and plain seconds (90).
func parseDuration(v string) (time.Duration, error) {
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. 30s, 5m)", v)
	}
	return d, nil
}

func loadServeConfig(args []string, getenv func(string) string, out io.Writer) (serveConfig, error) {
	c := serveConfig{API: api.DefaultConfig(), Gateway: gateway.DefaultConfig(), Webhooks: webhook.DefaultConfig()}
	f := newEnvFlags("serve", getenv, out)
	var maxBody int
	var logLevel, allow, schedule, cors string
	f.str(&c.HTTPAddr, "http-addr", "SWITCHBOARD_HTTP_ADDR", defaultHTTPAddr, "HTTP listen address")
	f.str(&c.DatabaseURL, "database-url", "SWITCHBOARD_DATABASE_URL", defaultDatabaseURL, "Postgres URL; the database is created if missing")
	f.str(&c.Gateway.AMQPURL, "amqp-url", "SWITCHBOARD_AMQP_URL", c.Gateway.AMQPURL, "RabbitMQ URL")
	f.str(&c.Gateway.RequestExchange, "request-exchange", "SWITCHBOARD_REQUEST_EXCHANGE", c.Gateway.RequestExchange, "topic exchange requests are published to")
	f.str(&c.Gateway.ReplyQueue, "reply-queue", "SWITCHBOARD_REPLY_QUEUE", c.Gateway.ReplyQueue, "durable queue replies come back on")
	f.str(&c.Gateway.EventsExchange, "events-exchange", "SWITCHBOARD_EVENTS_EXCHANGE", c.Gateway.EventsExchange, "topic exchange for lifecycle events (request.cancelled.<routing key>)")
	f.str(&c.Gateway.DeadLetterExchange, "dead-letter-exchange", "SWITCHBOARD_DEAD_LETTER_EXCHANGE", c.Gateway.DeadLetterExchange, "exchange the reply queue dead-letters to")
	f.str(&c.Gateway.DeadLetterQueue, "dead-letter-queue", "SWITCHBOARD_DEAD_LETTER_QUEUE", c.Gateway.DeadLetterQueue, "queue of dead-lettered replies, recorded in Postgres")
	f.str(&c.Gateway.DeadLetterQueueType, "dead-letter-queue-type", "SWITCHBOARD_DEAD_LETTER_QUEUE_TYPE", c.Gateway.DeadLetterQueueType, "classic, or quorum (replicated across a RabbitMQ cluster)")
	f.int(&c.Gateway.ReplyDeliveryLimit, "reply-delivery-limit", "SWITCHBOARD_REPLY_DELIVERY_LIMIT", c.Gateway.ReplyDeliveryLimit, "deliveries of one reply before the broker dead-letters it")
	f.int(&c.Gateway.MaxReplyBytes, "max-reply-bytes", "SWITCHBOARD_MAX_REPLY_BYTES", c.Gateway.MaxReplyBytes, "largest reply body stored; a larger one fails its request")
	f.dur(&c.Gateway.Retention, "retention", "SWITCHBOARD_RETENTION", c.Gateway.Retention, "how long finished requests and dead letters are kept")
	f.int(&maxBody, "max-body-bytes", "SWITCHBOARD_MAX_BODY_BYTES", int(c.API.MaxBodyBytes), "largest request or HTTP reply body kept inline; larger ones go by claim check, or are refused when it is off")
	var claimCheck, maxBlob int
	f.int(&claimCheck, "claim-check-bytes", "SWITCHBOARD_CLAIM_CHECK_BYTES", 0, "request and HTTP reply bodies larger than this are stored as blobs and sent as claims; 0: max-body-bytes")
	f.int(&maxBlob, "max-blob-bytes", "SWITCHBOARD_MAX_BLOB_BYTES", int(c.API.MaxBlobBytes), "largest body accepted by claim check; 0: no claim check, bodies over max-body-bytes are refused")
	f.dur(&c.API.DefaultTimeout, "default-timeout", "SWITCHBOARD_DEFAULT_TIMEOUT", c.API.DefaultTimeout, "request deadline when the client sends no Request-Timeout")
	f.dur(&c.API.MaxTimeout, "max-timeout", "SWITCHBOARD_MAX_TIMEOUT", c.API.MaxTimeout, "largest Request-Timeout accepted")
	f.dur(&c.API.MaxWait, "max-wait", "SWITCHBOARD_MAX_WAIT", c.API.MaxWait, "cap on long-poll ?wait= and Prefer: wait=")
	var expects string
	f.str(&expects, "expect-replies", "SWITCHBOARD_EXPECT_REPLIES", "", "route defaults of Expect-Replies for requests that send none, e.g. survey.#=3,census.#=all (first match wins; empty: one reply)")
	f.dur(&c.Gateway.ConfirmTimeout, "confirm-timeout", "SWITCHBOARD_CONFIRM_TIMEOUT", c.Gateway.ConfirmTimeout, "wait for a publisher confirm before leaving a request to the outbox relay")
	f.dur(&c.Gateway.SweepInterval, "sweep-interval", "SWITCHBOARD_SWEEP_INTERVAL", c.Gateway.SweepInterval, "how often overdue requests are expired")
	f.dur(&c.Gateway.StallAfter, "stall-after", "SWITCHBOARD_STALL_AFTER", c.Gateway.StallAfter, "flag a published request no responder has picked up (request.received) within this; 0: off")
	f.int(&c.Gateway.Prefetch, "prefetch", "SWITCHBOARD_PREFETCH", c.Gateway.Prefetch, "unacked replies held at once, and stored concurrently")
	f.int(&c.DBMaxConns, "db-max-conns", "SWITCHBOARD_DB_MAX_CONNS", 20, "Postgres pool size")
	f.int(&c.MaxConnections, "max-connections", "SWITCHBOARD_MAX_CONNECTIONS", 0, "client connections held at once; 0: the open-file limit less 256 kept for Postgres and the broker")
	f.boolean(&c.Migrate, "migrate", "SWITCHBOARD_MIGRATE", true, "apply pending migrations at start")
	f.dur(&c.ShutdownTimeout, "shutdown-timeout", "SWITCHBOARD_SHUTDOWN_TIMEOUT", 30*time.Second, "bound on graceful shutdown")
	f.dur(&c.ShutdownDelay, "shutdown-delay", "SWITCHBOARD_SHUTDOWN_DELAY", 0, "after SIGTERM, keep serving this long with /readyz answering 503, so load balancers take the instance out before it stops")
	f.str(&allow, "webhook-allow", "SWITCHBOARD_WEBHOOK_ALLOW", "", "webhook SSRF exceptions: CIDRs, addresses or host names that may be delivered to although private, loopback or link-local")
	f.str(&schedule, "webhook-schedule", "SWITCHBOARD_WEBHOOK_SCHEDULE", formatSchedule(webhook.DefaultSchedule), "delay before each webhook attempt, comma-separated; its length is the number of attempts")
	f.dur(&c.Webhooks.Timeout, "webhook-timeout", "SWITCHBOARD_WEBHOOK_TIMEOUT", c.Webhooks.Timeout, "bound on one webhook attempt")
	f.int(&c.Webhooks.Workers, "webhook-workers", "SWITCHBOARD_WEBHOOK_WORKERS", c.Webhooks.Workers, "webhook attempts made at once by this instance")
	f.str(&c.Gateway.EventHistoryQueue, "event-history-queue", "SWITCHBOARD_EVENT_HISTORY_QUEUE", c.Gateway.EventHistoryQueue, "durable queue, bound to # on the events exchange, whose events are kept in each request's history")
	f.int(&c.EventsPerRequest, "events-per-request", "SWITCHBOARD_EVENTS_PER_REQUEST", 1000, "events kept in one request's history")
	f.int(&c.MaxSubscribers, "max-subscribers", "SWITCHBOARD_MAX_SUBSCRIBERS", 1000, "topic subscriptions (GET /v1/events) served at once by this instance")
	f.boolean(&c.LifecycleEvents, "lifecycle-events", "SWITCHBOARD_LIFECYCLE_EVENTS", true, "publish request.accepted and request.<status> events on the events exchange")
	f.boolean(&c.Gateway.ReplyReceipts, "reply-receipts", "SWITCHBOARD_REPLY_RECEIPTS", c.Gateway.ReplyReceipts, "record each reply's first delivery (webhook 2xx or first read) and publish reply.delivered")
	f.str(&cors, "cors-origins", "SWITCHBOARD_CORS_ORIGINS", "", "origins whose browsers may call the API, comma-separated (e.g. https://app.example.com), or *; empty: CORS off")
	f.boolean(&c.Console, "console", "SWITCHBOARD_CONSOLE", true, "serve the web console at /ui/")
	f.boolean(&c.InsecureNoAuth, "insecure-no-auth", "SWITCHBOARD_INSECURE_NO_AUTH", false, "serve every call without authentication, as an operator (local development only; a warning is logged on every call)")
	var rps string
	f.str(&rps, "rate-limit", "SWITCHBOARD_RATE_LIMIT", "0", "submits per second per project (0: no limit); projects may override it")
	f.int(&c.RateBurst, "rate-burst", "SWITCHBOARD_RATE_BURST", 0, "submits a project may burst above its rate (0: the rate, at least 1)")
	f.int(&c.MaxWaiters, "max-waiters-per-project", "SWITCHBOARD_MAX_WAITERS_PER_PROJECT", 0, "long-polls and event streams a project may hold at once on an instance (0: no limit)")
	f.str(&c.TLSCertFile, "tls-cert-file", "SWITCHBOARD_TLS_CERT_FILE", "", "PEM certificate (chain) to serve HTTPS with; needs -tls-key-file")
	f.str(&c.TLSKeyFile, "tls-key-file", "SWITCHBOARD_TLS_KEY_FILE", "", "PEM private key of -tls-cert-file")
	f.str(&c.RulesDir, "rules-dir", "SWITCHBOARD_RULES_DIR", "", "directory of rule files (*.yaml) for the rules engine, reloaded on change and on SIGHUP; empty: no rules")
	f.logFlags(&logLevel, &c.LogFormat)
	if err := f.parse(args); err != nil {
		return c, err
	}
	c.Args = f.fs.Args()
	rate, rerr := strconv.ParseFloat(rps, 64)
	if c.RateRPS = rate; rerr != nil || rate < 0 {
		return c, fmt.Errorf("rate limit %q: want a number of submits per second, 0 or more", rps)
	}
	if c.RateBurst < 0 || c.MaxWaiters < 0 {
		return c, fmt.Errorf("rate burst and max waiters per project must be 0 or more")
	}
	c.API.MaxBodyBytes = int64(maxBody)
	routes, err := api.ParseRouteExpect(expects)
	if err != nil {
		return c, fmt.Errorf("SWITCHBOARD_EXPECT_REPLIES: %w", err)
	}
	c.API.ExpectReplies = routes
	c.API.ClaimCheckBytes, c.API.MaxBlobBytes = int64(claimCheck), int64(maxBlob)
	for _, o := range strings.FieldsFunc(cors, func(r rune) bool { return r == ',' || r == ' ' }) {
		if o != "*" {
			if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
				return c, fmt.Errorf("SWITCHBOARD_CORS_ORIGINS: %q is not an origin (scheme://host[:port]) or *", o)
			}
		}
		c.CORSOrigins = append(c.CORSOrigins, o)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return c, fmt.Errorf("TLS needs both SWITCHBOARD_TLS_CERT_FILE and SWITCHBOARD_TLS_KEY_FILE")
	}
	if c.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			return c, fmt.Errorf("TLS certificate: %w", err)
		}
	}
	if c.EventsPerRequest < 1 || c.MaxSubscribers < 0 {
		return c, fmt.Errorf("events per request must be at least 1, and max subscribers 0 or more")
	}
	// Secrets come from the environment only: a flag would show them in the
	// process list.
	if c.Webhooks.Secrets, err = signature.ParseSecrets(getenv("SWITCHBOARD_WEBHOOK_SECRETS")); err != nil {
		return c, fmt.Errorf("SWITCHBOARD_WEBHOOK_SECRETS: %w", err)
	}
	c.WebhookAllow = allow
	if c.WebhookPolicy, err = webhook.ParseAllowList(allow); err != nil {
		return c, fmt.Errorf("webhook allow-list: %w", err)
	}
	if c.Webhooks.Schedule, err = webhook.ParseSchedule(schedule); err != nil {
		return c, err
	}
	if c.LogLevel, err = parseLog(logLevel, c.LogFormat); err != nil {
		return c, err
	}
	// Every reply held is stored at once, so that concurrent replies share
	// group commits.
	c.Gateway.ReplyWorkers = c.Gateway.Prefetch
	if c.MaxConnections < 0 {
		return c, fmt.Errorf("max connections must be 0 (derived from the open-file limit) or more")
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = defaultMaxConnections()
	}
	if c.DBMaxConns < 2 {
		return c, fmt.Errorf("db max conns must be at least 2")
	}
	if err := c.API.Validate(); err != nil {
		return c, err
	}
	if err := c.Gateway.Validate(); err != nil {
		return c, err
	}
	if c.WebhooksOn() {
		if err := c.Webhooks.Validate(); err != nil {
			return c, err
		}
	}
	return c, nil
}

func formatSchedule(s []time.Duration) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = d.String()
	}
	return strings.Join(parts, ",")
}

// logAttrs describes the configuration for the start-up log line, with
// passwords masked.
func (c serveConfig) logAttrs() []any {
	return []any{
		"http_addr", c.HTTPAddr,
		"max_connections", c.MaxConnections,
		"database_url", maskURL(c.DatabaseURL),
		"amqp_url", maskURL(c.Gateway.AMQPURL),
		"request_exchange", c.Gateway.RequestExchange,
		"reply_queue", c.Gateway.ReplyQueue,
		"events_exchange", c.Gateway.EventsExchange,
		"dead_letter_queue", c.Gateway.DeadLetterQueue,
		"retention", c.Gateway.Retention.String(),
		"max_body_bytes", c.API.MaxBodyBytes,
		"claim_check_bytes", c.API.ClaimCheckBytes,
		"max_blob_bytes", c.API.MaxBlobBytes,
		"default_timeout", c.API.DefaultTimeout.String(),
		"max_timeout", c.API.MaxTimeout.String(),
		"max_wait", c.API.MaxWait.String(),
		"expect_replies", formatExpects(c.API.ExpectReplies),
		"migrate", c.Migrate,
		"webhooks", c.WebhooksOn(),
		"webhook_secrets", len(c.Webhooks.Secrets), // how many, never what
		"webhook_allow", c.WebhookAllow,
		"webhook_schedule", formatSchedule(c.Webhooks.Schedule),
		"event_history_queue", c.Gateway.EventHistoryQueue,
		"events_per_request", c.EventsPerRequest,
		"max_subscribers", c.MaxSubscribers,
		"lifecycle_events", c.LifecycleEvents,
		"reply_receipts", c.Gateway.ReplyReceipts,
		"cors_origins", strings.Join(c.CORSOrigins, ","),
		"console", c.Console,
		"rules_dir", c.RulesDir,
		"tls", c.TLSCertFile != "",
		"insecure_no_auth", c.InsecureNoAuth,
		"rate_limit", c.RateRPS,
		"rate_burst", c.RateBurst,
		"max_waiters_per_project", c.MaxWaiters,
	}
}

// maskURL hides the password of a URL (and of a key=value DSN).
func maskURL(raw string) string {
	u, err := url.Parse(raw)
	if err == nil && u.Scheme != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	fields := strings.Fields(raw)
	for i, f := range fields {
		if strings.HasPrefix(f, "password=") {
			fields[i] = "password=xxxxx"
		}
	}
	return strings.Join(fields, " ")
}

// newLogger logs text for people at a terminal, or JSON for log pipelines
// (SWITCHBOARD_LOG_FORMAT=json).
func newLogger(out io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(tracelog.NewHandler(slog.NewJSONHandler(out, opts)))
	}
	return slog.New(tracelog.NewHandler(slog.NewTextHandler(out, opts)))
}

// logFlags adds the log settings every subcommand shares.
func (e *envFlags) logFlags(level, format *string) {
	e.str(level, "log-level", "SWITCHBOARD_LOG_LEVEL", "info", "debug, info, warn or error")
	e.str(format, "log-format", "SWITCHBOARD_LOG_FORMAT", "text", "text or json")
}

func parseLog(level, format string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return l, fmt.Errorf("log level: %w", err)
	}
	if format != "text" && format != "json" {
		return l, fmt.Errorf("log format %q: want text or json", format)
	}
	return l, nil
}

// formatExpects writes route defaults of Expect-Replies back as configured.
func formatExpects(routes []api.RouteExpect) string {
	parts := make([]string, len(routes))
	for i, e := range routes {
		n := strconv.Itoa(e.N)
		if e.N == correlation.ExpectAll {
			n = "all"
		}
		parts[i] = e.Pattern + "=" + n
	}
	return strings.Join(parts, ",")
}

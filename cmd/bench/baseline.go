package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The baseline is the path a team would write without the gateway: a
// service that, per request, INSERTs a row (autocommit, synchronous_commit
// as the server has it), publishes persistent and mandatory to a durable
// topic exchange on its own confirm-mode channel and waits for the confirm,
// waits for the reply on its durable reply queue (one dispatcher goroutine
// routes replies to callers by correlation id), UPDATEs the row with the
// reply (autocommit) and only then acks the reply. No HTTP, no NOTIFY, no
// status bookkeeping beyond that.
//
// It runs in a subprocess of the bench (the bench binary re-executed with
// SBBENCH_ROLE=baseline), so its CPU time and peak RSS are its own, as the
// gateway's are.

const (
	roleEnv           = "SBBENCH_ROLE"
	baselineConfigEnv = "SBBENCH_BASELINE"
)

// baselineConfig is what the bench hands its baseline worker.
type baselineConfig struct {
	Kind        string `json:"kind"` // roundtrip, intake or replies
	DatabaseURL string `json:"database_url"`
	AMQPURL     string `json:"amqp_url"`
	Exchange    string `json:"exchange"`
	ReplyQueue  string `json:"reply_queue"`
	RoutingKey  string `json:"routing_key"`
	Clients     int    `json:"clients"`
	Requests    int    `json:"requests"`
	Warmup      int    `json:"warmup"`
	DBMaxConns  int    `json:"db_max_conns"`
	Payload     string `json:"payload"`
}

// workerMsg is one line the worker writes on its stdout.
type workerMsg struct {
	Event  string        `json:"event"` // ready, measuring, result
	IDs    []string      `json:"ids,omitempty"`
	Result *workerResult `json:"result,omitempty"`
}

type workerResult struct {
	Done       int            `json:"done"`
	Errors     int            `json:"errors"`
	FirstError string         `json:"first_error,omitempty"`
	Elapsed    time.Duration  `json:"elapsed"`
	Latency    latencySummary `json:"latency"`
	CPU        time.Duration  `json:"cpu"`
	PeakRSS    int64          `json:"peak_rss"`
}

// isBaselineWorker reports whether this process was started as the
// baseline worker.
func isBaselineWorker() bool { return os.Getenv(roleEnv) == "baseline" }

// baselineMain is the worker's main.
func baselineMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var cfg baselineConfig
	if err := json.Unmarshal([]byte(os.Getenv(baselineConfigEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "baseline: config:", err)
		return 2
	}
	if err := runBaselineWorker(ctx, cfg, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		return 1
	}
	return 0
}

// naiveService is the baseline service.
type naiveService struct {
	cfg     baselineConfig
	payload []byte
	pool    *pgxpool.Pool
	conn    *amqp.Connection
	pubs    []naivePublisher // one per client goroutine

	mu      sync.Mutex
	waiting map[string]chan amqp.Delivery
}

type naivePublisher struct {
	ch      *amqp.Channel
	returns chan amqp.Return
}

func openNaiveService(ctx context.Context, cfg baselineConfig) (*naiveService, error) {
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	poolCfg.MaxConns = int32(cfg.DBMaxConns)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, err
	}
	s := &naiveService{cfg: cfg, payload: []byte(cfg.Payload), pool: pool, waiting: map[string]chan amqp.Delivery{}}
	s.conn, err = amqp.DialConfig(cfg.AMQPURL, amqp.Config{Heartbeat: 10 * time.Second, Dial: amqp.DefaultDial(5 * time.Second),
		Properties: amqp.Table{"connection_name": "switchboard bench baseline"}})
	if err != nil {
		pool.Close()
		return nil, err
	}
	for range cfg.Clients {
		ch, err := s.conn.Channel()
		if err != nil {
			s.close()
			return nil, err
		}
		if err := ch.Confirm(false); err != nil {
			s.close()
			return nil, err
		}
		s.pubs = append(s.pubs, naivePublisher{ch: ch, returns: ch.NotifyReturn(make(chan amqp.Return, 1))})
	}
	return s, nil
}

func (s *naiveService) close() {
	_ = s.conn.Close()
	s.pool.Close()
}

// consume starts the reply consumer: handle runs on workers goroutines.
func (s *naiveService) consume(workers int, handle func(amqp.Delivery)) error {
	ch, err := s.conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Qos(2*s.cfg.Clients, 0, false); err != nil {
		return err
	}
	deliveries, err := ch.Consume(s.cfg.ReplyQueue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	for range workers {
		go func() {
			for d := range deliveries {
				handle(d)
			}
		}()
	}
	return nil
}

// dispatch hands a reply to the caller waiting for it.
func (s *naiveService) dispatch(d amqp.Delivery) {
	s.mu.Lock()
	c := s.waiting[d.CorrelationId]
	s.mu.Unlock()
	if c == nil {
		_ = d.Ack(false) // nobody waits for it (a duplicate, or its caller gave up)
		return
	}
	select {
	case c <- d:
	default:
		_ = d.Ack(false) // a duplicate
	}
}

const insertBaseline = `INSERT INTO ` + baselineTable + ` (id, routing_key, status, time_ms, expires_at, body, body_sha256)
	VALUES ($1, $2, 'pending', $3, $4, $5, $6)`

const updateBaseline = `UPDATE ` + baselineTable + `
	SET status = 'replied', reply_message_id = $2, reply_correlation_id = $3, reply_time_ms = $4,
	    reply_body = $5, replied_at = now(), updated_at = now()
	WHERE id = $1 AND status = 'pending'`

// call is one request: insert, publish with a confirm, and for a round
// trip wait for the reply, store it and ack it.
func (s *naiveService) call(ctx context.Context, worker int) error {
	id, _ := uuid.NewV7()
	key := id.String()
	now := time.Now()
	sum := sha256.Sum256(s.payload)
	if _, err := s.pool.Exec(ctx, insertBaseline, id, s.cfg.RoutingKey, now.UnixMilli(), now.Add(time.Minute), s.payload, sum[:]); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	roundtrip := s.cfg.Kind == "roundtrip"
	var replies chan amqp.Delivery
	if roundtrip {
		replies = make(chan amqp.Delivery, 1)
		s.mu.Lock()
		s.waiting[key] = replies
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.waiting, key)
			s.mu.Unlock()
		}()
	}
	p := s.pubs[worker]
	confirm, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, s.cfg.Exchange, s.cfg.RoutingKey, true, false, amqp.Publishing{
		Headers:      amqp.Table{"time": now.UnixMilli()},
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    key,
		Timestamp:    now,
		ReplyTo:      s.cfg.ReplyQueue,
		AppId:        "baseline",
		Body:         s.payload,
	})
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	ok, err := confirm.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("confirm: %w", err)
	}
	if !ok {
		return errors.New("publish nacked")
	}
	// The broker sends a return before the ack, and the client hands it
	// over before it handles the ack: it is here by now if there is one.
	select {
	case <-p.returns:
		return errors.New("publish returned: unroutable")
	default:
	}
	if !roundtrip {
		return nil
	}
	var d amqp.Delivery
	select {
	case d = <-replies:
	case <-time.After(30 * time.Second):
		return errors.New("no reply within 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.store(ctx, d)
}

// store records a reply and then acks it.
func (s *naiveService) store(ctx context.Context, d amqp.Delivery) error {
	id, err := uuid.Parse(d.CorrelationId)
	if err != nil {
		_ = d.Ack(false)
		return fmt.Errorf("reply with correlation id %q", d.CorrelationId)
	}
	if _, err := s.pool.Exec(ctx, updateBaseline, id, d.MessageId, d.CorrelationId, time.Now().UnixMilli(), d.Body); err != nil {
		_ = d.Nack(false, true)
		return fmt.Errorf("update: %w", err)
	}
	return d.Ack(false)
}

// preinsert creates n pending rows for the replies measurement.
func (s *naiveService) preinsert(ctx context.Context, n int) ([]string, error) {
	ids := make([]string, n)
	rows := make([][]any, n)
	now := time.Now()
	sum := sha256.Sum256(s.payload)
	for i := range n {
		id, _ := uuid.NewV7()
		ids[i] = id.String()
		rows[i] = []any{id, s.cfg.RoutingKey, "pending", now.UnixMilli(), now.Add(time.Hour), s.payload, sum[:]}
	}
	_, err := s.pool.CopyFrom(ctx, pgx.Identifier{baselineTable},
		[]string{"id", "routing_key", "status", "time_ms", "expires_at", "body", "body_sha256"}, pgx.CopyFromRows(rows))
	return ids, err
}

func runBaselineWorker(ctx context.Context, cfg baselineConfig, stdin io.Reader, stdout io.Writer) error {
	s, err := openNaiveService(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.close()
	enc := json.NewEncoder(stdout)
	self := os.Getpid()
	result := func(p phase, cpu0 time.Duration) error {
		cpu, _ := procCPU(self)
		rss, _ := procPeakRSS(self)
		r := &workerResult{Done: len(p.lats), Errors: p.errors, Elapsed: p.elapsed, Latency: summarize(p.lats), CPU: cpu - cpu0, PeakRSS: rss}
		if p.firstErr != nil {
			r.FirstError = p.firstErr.Error()
		}
		return enc.Encode(workerMsg{Event: "result", Result: r})
	}

	if cfg.Kind == "replies" {
		// Replies are published by the bench; this side stores them.
		var mu sync.Mutex
		var p phase
		if err := s.consume(cfg.Clients, func(d amqp.Delivery) {
			if err := s.store(ctx, d); err != nil {
				mu.Lock()
				p.errors++
				if p.firstErr == nil {
					p.firstErr = err
				}
				mu.Unlock()
			}
		}); err != nil {
			return err
		}
		ids, err := s.preinsert(ctx, cfg.Warmup+cfg.Requests)
		if err != nil {
			return fmt.Errorf("pre-insert: %w", err)
		}
		if err := enc.Encode(workerMsg{Event: "ready", IDs: ids}); err != nil {
			return err
		}
		var cpu0 time.Duration
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			switch sc.Text() {
			case "measure":
				cpu0, _ = procCPU(self)
				mu.Lock()
				p = phase{}
				mu.Unlock()
				if err := enc.Encode(workerMsg{Event: "measuring"}); err != nil {
					return err
				}
			case "stop":
				mu.Lock()
				defer mu.Unlock()
				return result(p, cpu0)
			}
		}
		return errors.New("the bench went away")
	}

	if cfg.Kind == "roundtrip" {
		if err := s.consume(1, s.dispatch); err != nil {
			return err
		}
	}
	if _, err := drive(ctx, cfg.Clients, cfg.Warmup, s.call); err != nil {
		return err
	}
	if err := enc.Encode(workerMsg{Event: "measuring"}); err != nil {
		return err
	}
	cpu0, _ := procCPU(self)
	p, err := drive(ctx, cfg.Clients, cfg.Requests, s.call)
	if err != nil {
		return err
	}
	return result(p, cpu0)
}

// baselineProc is the bench's handle on a running baseline worker.
type baselineProc struct {
	*child
	stdin io.WriteCloser
	msgs  chan workerMsg
}

func startBaseline(cfg baselineConfig) (*baselineProc, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	c, stdin, stdout, err := startSelf("baseline", roleEnv+"=baseline", baselineConfigEnv+"="+string(raw))
	if err != nil {
		return nil, err
	}
	b := &baselineProc{child: c, stdin: stdin, msgs: make(chan workerMsg, 4)}
	readMessages(stdout, func(m workerMsg) bool {
		b.msgs <- m
		return true
	}, func() { close(b.msgs) })
	return b, nil
}

// next waits for the worker's next message, which must be event.
func (b *baselineProc) next(ctx context.Context, event string) (workerMsg, error) {
	select {
	case m, ok := <-b.msgs:
		if !ok {
			<-b.done
			return m, fmt.Errorf("baseline worker exited (%v) before %q:\n%s", b.err, event, b.logTail())
		}
		if m.Event != event {
			return m, fmt.Errorf("baseline worker said %q, want %q", m.Event, event)
		}
		return m, nil
	case <-ctx.Done():
		return workerMsg{}, ctx.Err()
	}
}

func (b *baselineProc) command(cmd string) error {
	_, err := io.WriteString(b.stdin, cmd+"\n")
	return err
}

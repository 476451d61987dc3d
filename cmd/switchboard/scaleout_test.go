package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testresponder"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/responder"
)

// balancer is the load balancer in front of the instances, as a
// deployment would have one: round-robin over the instances whose /readyz
// answers 200, checked every 50 ms.
type balancer struct {
	mu    sync.Mutex
	addrs []string
	ready map[string]bool
	next  int
}

func (b *balancer) add(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addrs = append(b.addrs, addr)
	b.ready[addr] = true
}

func (b *balancer) pick() (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range len(b.addrs) {
		addr := b.addrs[b.next%len(b.addrs)]
		b.next++
		if b.ready[addr] {
			return addr, nil
		}
	}
	return "", errors.New("no instance is ready")
}

func (b *balancer) check(ctx context.Context) {
	probe := &http.Client{Timeout: time.Second}
	for ctx.Err() == nil {
		b.mu.Lock()
		addrs := append([]string(nil), b.addrs...)
		b.mu.Unlock()
		for _, addr := range addrs {
			res, err := probe.Get("http://" + addr + "/readyz")
			ok := err == nil && res.StatusCode == http.StatusOK
			if err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
			b.mu.Lock()
			b.ready[addr] = ok
			b.mu.Unlock()
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// Three `switchboard serve` instances on their own ports share Postgres and
// RabbitMQ behind a balancer; clients spread over them submit and wait, some
// with `Prefer: wait` on the submit, some by long-polling whichever instance
// the balancer picks next. Mid-run one instance is stopped the way the
// README's rolling restart says (SIGTERM with a shutdown delay), and a new
// one joins. Every request is replied exactly once, every call gets an HTTP
// answer (not one transport error), and a long-poll held by the stopped
// instance is answered by it, not dropped, and finished on another.
func TestThreeInstancesOneStoppedMidRun(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	// The delay covers the balancer's 50 ms checks with room for a loaded
	// CI host, where one check can take most of a second.
	e := append(env(dbURL, amqpURL, names), "SWITCHBOARD_SHUTDOWN_DELAY=2s")

	gws := []*proc{start(t, e, "serve"), start(t, e, "serve"), start(t, e, "serve")}
	lb := &balancer{ready: map[string]bool{}}
	for _, gw := range gws {
		lb.add(gw.addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go lb.check(ctx)

	// The service: answers scale.work after 10–200 ms, and scale.held only
	// when the test says so.
	release := make(chan struct{})
	testresponder.Start(t, responder.Config{AMQPURL: amqpURL, Exchange: names.Exchange,
		EventsExchange: names.EventsExchange, Queue: names.Queue("scale"), Patterns: []string{"scale.#"},
		Prefetch: 64, Logger: slog.New(slog.DiscardHandler)},
		func(ctx context.Context, req responder.Request) (any, error) {
			delay := time.Duration(10+rand.IntN(190)) * time.Millisecond
			if req.RoutingKey == "scale.held" {
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				delay = 0
			}
			time.Sleep(delay)
			return map[string]json.RawMessage{"echo": req.Body}, nil
		})

	// One new connection per call, as through a balancer that does not
	// pool: a stopped instance shows up as refused, never as a reused
	// connection it closed.
	httpc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var transportErrors atomic.Int64
	call := func(method, addr, path string, headers map[string]string, body string) (int, map[string]any, error) {
		req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		res, err := httpc.Do(req)
		if err != nil {
			transportErrors.Add(1)
			return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		defer res.Body.Close()
		var rec map[string]any
		if err := json.NewDecoder(res.Body).Decode(&rec); err != nil {
			return res.StatusCode, nil, fmt.Errorf("%s %s: %d, body: %w", method, path, res.StatusCode, err)
		}
		return res.StatusCode, rec, nil
	}
	final := func(rec map[string]any) bool {
		return rec != nil && rec["status"] != "pending" && rec["status"] != "queued"
	}

	// run submits one request (the same Message-ID on a retry) and waits
	// for its reply, moving to whichever instance the balancer picks.
	run := func(path, body string, preferWait bool) (map[string]any, error) {
		id := uuid.NewString()
		headers := map[string]string{"Content-Type": "application/json", "Message-ID": id}
		if preferWait {
			headers["Prefer"] = "wait=15"
		}
		deadline := time.Now().Add(60 * time.Second)
		var rec map[string]any
		for rec == nil {
			addr, err := lb.pick()
			if err != nil {
				return nil, err
			}
			code, r, err := call("POST", addr, path, headers, body)
			switch {
			case err != nil:
				return nil, err
			case code != http.StatusAccepted && code != http.StatusOK:
				return nil, fmt.Errorf("POST %s on %s: %d %v", path, addr, code, r)
			}
			rec = r
		}
		for !final(rec) {
			if time.Now().After(deadline) {
				return rec, fmt.Errorf("request %s not replied within a minute", id)
			}
			addr, err := lb.pick()
			if err != nil {
				return nil, err
			}
			code, r, err := call("GET", addr, "/v1/requests/"+id+"?wait=15", nil, "")
			switch {
			case err != nil:
				return nil, err
			case code != http.StatusOK && code != http.StatusAccepted:
				return nil, fmt.Errorf("GET %s on %s: %d %v", id, addr, code, r)
			}
			rec = r
		}
		return rec, nil
	}

	const total = 300
	var done atomic.Int64
	jobs := make(chan int)
	errs := make(chan error, total)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for n := range jobs {
				body := fmt.Sprintf(`{"n": %d}`, n)
				rec, err := run("/scale/work", body, n%2 == 0)
				if err == nil && rec["status"] != "replied" {
					err = fmt.Errorf("request %d ended %v", n, rec["status"])
				}
				if err == nil {
					reply, _ := rec["reply"].(map[string]any)
					raw, _ := json.Marshal(reply["body"])
					if string(raw) != fmt.Sprintf(`{"echo":{"n":%d}}`, n) {
						err = fmt.Errorf("request %d got the reply %s", n, raw)
					}
				}
				if err != nil {
					errs <- err
				}
				done.Add(1)
			}
		})
	}
	go func() {
		defer close(jobs)
		for n := range total {
			select {
			case jobs <- n:
			case <-ctx.Done():
				return
			}
		}
	}()

	// A third of the way in: a long-poll held on the instance that is about
	// to stop, for a request its service has not answered.
	require.Eventually(t, func() bool { return done.Load() >= total/3 }, time.Minute, 10*time.Millisecond)
	stopping := gws[2]
	code, held, err := call("POST", stopping.addr, "/scale/held", map[string]string{"Content-Type": "application/json"}, `{"held": true}`)
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, code)
	heldID := held["id"].(string)
	heldAnswer := make(chan map[string]any, 1)
	go func() {
		_, rec, err := call("GET", stopping.addr, "/v1/requests/"+heldID+"?wait=50", nil, "")
		if err != nil {
			t.Errorf("the held long-poll on the stopping instance: %v", err)
		}
		heldAnswer <- rec
	}()
	require.Eventually(t, func() bool { return metricOf(t, stopping.addr, "switchboard_waiters") >= 1 },
		10*time.Second, 10*time.Millisecond)

	stoppedAt := time.Now()
	require.NoError(t, stopping.cmd.Process.Signal(syscall.SIGTERM))
	// During the shutdown delay: not ready, still serving.
	for {
		code, _, err := call("GET", stopping.addr, "/readyz", nil, "")
		require.NoError(t, err, "the instance serves through its shutdown delay")
		if code == http.StatusServiceUnavailable {
			break
		}
		require.Less(t, time.Since(stoppedAt), 5*time.Second, "/readyz still answers %d", code)
		time.Sleep(5 * time.Millisecond)
	}
	code, _, err = call("GET", stopping.addr, "/healthz", nil, "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	select {
	case rec := <-heldAnswer:
		require.NotNil(t, rec)
		require.Equal(t, "pending", rec["status"], "answered with the record as it is")
		require.Less(t, time.Since(stoppedAt), 10*time.Second, "answered by the shutdown, not by the wait running out")
	case <-time.After(20 * time.Second):
		t.Fatal("the long-poll held by the stopped instance was never answered")
	}
	select {
	case err := <-stopping.exit:
		require.NoError(t, err, "graceful shutdown exits 0:\n%s", stopping.log())
		stopping.exit <- err
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit after SIGTERM:\n%s", stopping.log())
	}
	lb.add(start(t, e, "serve").addr) // the restarted instance joins

	// The held request is answered now, and its waiter moves on.
	close(release)
	got := make(chan error, 1)
	go func() {
		for {
			addr, err := lb.pick()
			if err != nil {
				got <- err
				return
			}
			_, rec, err := call("GET", addr, "/v1/requests/"+heldID+"?wait=15", nil, "")
			if err != nil || final(rec) {
				if err == nil && rec["status"] != "replied" {
					err = fmt.Errorf("the held request ended %v", rec["status"])
				}
				got <- err
				return
			}
		}
	}()
	require.NoError(t, <-got)

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.Zero(t, transportErrors.Load(), "every call got an HTTP answer")

	// In Postgres: every request once, every one replied.
	var requests, replied int
	conn, err := pgx.Connect(context.Background(), dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	require.NoError(t, conn.QueryRow(context.Background(),
		`SELECT count(*), count(*) FILTER (WHERE status = 'replied') FROM requests`).Scan(&requests, &replied))
	require.Equal(t, total+1, requests, "no request recorded twice, none lost")
	require.Equal(t, total+1, replied)
}

// metricOf reads an unlabelled metric from the instance at addr.
func metricOf(t *testing.T, addr, name string) float64 {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

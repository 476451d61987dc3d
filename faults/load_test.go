//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// loadConfig shapes the client load of a scenario.
type loadConfig struct {
	clients   int           // concurrent clients
	perClient int           // requests each client sends
	pace      time.Duration // between one client's POSTs
	// path picks the POST path of a client's i-th request, e.g.
	// /workflow/create (routing key workflow.create).
	path func(client, i int) string
	// timeout is the Request-Timeout in seconds; long, so that nothing
	// expires legitimately during a scenario.
	timeout int
	// targets returns the gateway base URLs a client uses, in order of
	// preference: it moves to the next one after a failure.
	targets func(client int) []string
	// deadline ends every client loop, posting and polling.
	deadline time.Time
	// prefer, when set, gives a client's Prefer header (e.g. wait=5).
	prefer func(client int) string
}

// observation is one thing a client was told about a request.
type observation struct {
	status     string // record status, or "404"
	replyMsgID string
	via        string // "POST" or "GET"
}

// clientRequest is one request as its client saw it.
type clientRequest struct {
	id     string
	client int
	path   string
	body   string

	mu          sync.Mutex
	attempts    int    // POST attempts
	codes       []int  // their HTTP statuses (0: transport error)
	accepted    bool   // a POST got a 2xx
	postStatus  string // the status that 2xx said
	lastProblem string // type of the last problem answer
	obs         []observation
	final       string // terminal status the client saw, if any
}

func (r *clientRequest) observe(o observation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs = append(r.obs, o)
	if terminal(o.status) && r.final == "" {
		r.final = o.status
	}
}

func terminal(status string) bool {
	switch status {
	case "replied", "failed", "expired", "unroutable", "cancelled":
		return true
	}
	return false
}

// load is the clients of a scenario: each POSTs its requests with a
// Message-ID of its own choosing, retrying after a connection error or a
// 5xx with the same id (the gateway answers a repeat idempotently), and
// long-polls every accepted request until it is terminal or the deadline
// passes.
type load struct {
	cfg    loadConfig
	client *http.Client

	mu   sync.Mutex
	reqs []*clientRequest

	accepted atomic.Int64
	posting  sync.WaitGroup
	polling  sync.WaitGroup
}

func startLoad(cfg loadConfig) *load {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     30 * time.Second,
	}
	l := &load{cfg: cfg, client: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
	for c := range cfg.clients {
		l.posting.Add(1)
		go func() {
			defer l.posting.Done()
			for i := range cfg.perClient {
				if time.Now().After(cfg.deadline) {
					return
				}
				started := time.Now()
				r := &clientRequest{id: uuid.NewString(), client: c, path: cfg.path(c, i),
					body: fmt.Sprintf(`{"client": %d, "seq": %d}`, c, i)}
				l.add(r)
				if l.post(r) {
					l.polling.Add(1)
					go func() { defer l.polling.Done(); l.poll(r) }()
				}
				time.Sleep(cfg.pace - time.Since(started))
			}
		}()
	}
	return l
}

func (l *load) add(r *clientRequest) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r)
	l.mu.Unlock()
}

// requests returns every request the clients sent (or tried to).
func (l *load) requests() []*clientRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*clientRequest(nil), l.reqs...)
}

// waitAccepted waits until n requests got a 2xx, or timeout.
func (l *load) waitAccepted(n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l.accepted.Load() >= int64(n) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// wait waits for every client loop, POSTs and long-polls, to end; they are
// bounded by the deadline.
func (l *load) wait() {
	l.posting.Wait()
	l.polling.Wait()
	l.client.CloseIdleConnections()
}

// track adds a request sent outside the client loops (a scenario's own
// POST) to the accounting.
func (l *load) track(r *clientRequest) { l.add(r) }

type answer struct {
	code    int
	record  map[string]any
	problem string
}

func (l *load) do(ctx context.Context, method, url string, headers map[string]string, body string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	for k, v := range headers {
		req.Header[k] = []string{v} // Message-ID as CONTRACT spells it
	}
	res, err := l.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return answer{code: res.StatusCode}, err
	}
	a := answer{code: res.StatusCode}
	var m map[string]any
	if json.Unmarshal(raw, &m) == nil {
		if strings.HasPrefix(res.Header.Get("Content-Type"), "application/problem+json") {
			a.problem, _ = m["type"].(string)
		} else {
			a.record = m
		}
	}
	return a, nil
}

func recordStatus(m map[string]any) (status, replyMsgID string) {
	status, _ = m["status"].(string)
	if reply, ok := m["reply"].(map[string]any); ok {
		replyMsgID, _ = reply["message_id"].(string)
	}
	return status, replyMsgID
}

// post sends r until a POST is answered 2xx, a 4xx says it never will be,
// or the deadline passes. It reports whether r was accepted.
func (l *load) post(r *clientRequest) bool {
	targets := l.cfg.targets(r.client)
	headers := map[string]string{
		"Content-Type":    "application/json",
		"Message-ID":      r.id,
		"Request-Timeout": strconv.Itoa(l.cfg.timeout),
	}
	if l.cfg.prefer != nil {
		if p := l.cfg.prefer(r.client); p != "" {
			headers["Prefer"] = p
		}
	}
	backoff := 50 * time.Millisecond
	for attempt := 0; time.Now().Before(l.cfg.deadline); attempt++ {
		ctx, cancel := context.WithDeadline(context.Background(), l.cfg.deadline)
		a, err := l.do(ctx, "POST", targets[attempt%len(targets)]+r.path, headers, r.body)
		cancel()
		r.mu.Lock()
		r.attempts++
		r.codes = append(r.codes, a.code)
		if a.problem != "" {
			r.lastProblem = a.problem
		}
		r.mu.Unlock()
		switch {
		case err == nil && a.code/100 == 2:
			status, replyID := recordStatus(a.record)
			r.mu.Lock()
			r.accepted = true
			r.postStatus = status
			r.mu.Unlock()
			r.observe(observation{status: status, replyMsgID: replyID, via: "POST"})
			l.accepted.Add(1)
			return true
		case err == nil && a.code < 500:
			return false // refused for good: the checks report it
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, time.Second)
	}
	return false
}

// poll long-polls r until the client is told a terminal status or the
// deadline passes.
func (l *load) poll(r *clientRequest) {
	targets := l.cfg.targets(r.client)
	next := 0
	for time.Now().Before(l.cfg.deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), l.cfg.deadline)
		a, err := l.do(ctx, "GET", targets[next%len(targets)]+"/v1/requests/"+r.id+"?wait=5", nil, "")
		cancel()
		switch {
		case err == nil && a.code == 200:
			status, replyID := recordStatus(a.record)
			r.observe(observation{status: status, replyMsgID: replyID, via: "GET"})
			if terminal(status) {
				return
			}
			continue
		case err == nil && a.code == 404:
			// A contradiction after a 2xx; the checks report it.
			r.observe(observation{status: "404", via: "GET"})
		default:
			next++ // this gateway is in trouble: try the next one
		}
		time.Sleep(200 * time.Millisecond)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// phase is the outcome of running a fixed number of operations.
type phase struct {
	lats     []time.Duration // one per successful operation
	errors   int
	firstErr error
	elapsed  time.Duration
}

// drive runs n operations on clients concurrent workers (worker numbers
// 0..clients-1) and times each one. It returns early, with ctx's error,
// when ctx ends.
func drive(ctx context.Context, clients, n int, op func(ctx context.Context, worker int) error) (phase, error) {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		out   = phase{lats: make([]time.Duration, 0, n)}
		wg    sync.WaitGroup
		start = time.Now()
	)
	for w := range min(clients, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && next.Add(1) <= int64(n) {
				t := time.Now()
				err := op(ctx, w)
				d := time.Since(t)
				mu.Lock()
				if err != nil {
					if ctx.Err() == nil {
						out.errors++
						if out.firstErr == nil {
							out.firstErr = err
						}
					}
				} else {
					out.lats = append(out.lats, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	return out, ctx.Err()
}

// httpLoad is the clients' side of the gateway: plain net/http, as any
// service calling the gateway would use.
type httpLoad struct {
	base    string
	auth    string // the Authorization header of every call
	client  *http.Client
	payload []byte
}

func newHTTPLoad(addr, key string, clients int, payload []byte) *httpLoad {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        2 * clients,
		MaxIdleConnsPerHost: 2 * clients,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &httpLoad{base: "http://" + addr, auth: "Bearer " + key, client: &http.Client{Transport: tr, Timeout: 45 * time.Second}, payload: payload}
}

func (h *httpLoad) close() { h.client.CloseIdleConnections() }

// record is the part of a request record the bench reads.
type record struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

func (h *httpLoad) do(ctx context.Context, method, path string, header http.Header, body []byte) (int, record, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return 0, record{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", h.auth)
	res, err := h.client.Do(req)
	if err != nil {
		return 0, record{}, err
	}
	raw, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return res.StatusCode, record{}, err
	}
	var rec record
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &rec); err != nil {
			return res.StatusCode, rec, fmt.Errorf("%s %s: decode record: %w", method, path, err)
		}
	}
	if res.StatusCode >= 300 {
		return res.StatusCode, rec, fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, bytes.TrimSpace(raw))
	}
	return res.StatusCode, rec, nil
}

var jsonHeader = http.Header{"Content-Type": {"application/json"}}

// submit POSTs a request to the routing key's path and returns its record.
func (h *httpLoad) submit(ctx context.Context, key string, header http.Header) (record, error) {
	code, rec, err := h.do(ctx, http.MethodPost, "/"+strings.ReplaceAll(key, ".", "/"), header, h.payload)
	if err != nil {
		return rec, err
	}
	if rec.ID == "" {
		return rec, fmt.Errorf("POST %s: %d without a record id", key, code)
	}
	return rec, nil
}

// awaitReply long-polls the record until it is terminal and requires
// status replied.
func (h *httpLoad) awaitReply(ctx context.Context, rec record) error {
	for rec.Status == "pending" || rec.Status == "queued" {
		var err error
		if _, rec, err = h.do(ctx, http.MethodGet, "/v1/requests/"+rec.ID+"?wait=30", nil, nil); err != nil {
			return err
		}
	}
	if rec.Status != "replied" {
		return fmt.Errorf("request %s ended %s", rec.ID, rec.Status)
	}
	return nil
}

// longpoll is one round trip: POST (202 pending), then GET ?wait=30 until
// the reply is there.
func (h *httpLoad) longpoll(ctx context.Context, _ int) error {
	rec, err := h.submit(ctx, keyLongpoll, jsonHeader)
	if err != nil {
		return err
	}
	return h.awaitReply(ctx, rec)
}

var preferHeader = http.Header{"Content-Type": {"application/json"}, "Prefer": {"wait=30"}}

// prefer is one round trip in one call: POST with Prefer: wait=30 answers
// 200 with the replied record (or 202 after 30s, then long-poll).
func (h *httpLoad) prefer(ctx context.Context, _ int) error {
	rec, err := h.submit(ctx, keyPrefer, preferHeader)
	if err != nil {
		return err
	}
	return h.awaitReply(ctx, rec)
}

// intake is one accepted request: committed, published, confirmed, 202.
func (h *httpLoad) intake(ctx context.Context, _ int) error {
	rec, err := h.submit(ctx, keyIntake, jsonHeader)
	if err != nil {
		return err
	}
	if rec.Status != "pending" {
		return fmt.Errorf("request %s is %s, want pending", rec.ID, rec.Status)
	}
	return nil
}

// longTimeout keeps the replies mode's requests open however long creating
// them all takes.
var longTimeout = http.Header{"Content-Type": {"application/json"}, "Request-Timeout": {"600"}}

// createPending creates n pending requests nobody answers (key must route
// to the sink queue) and returns their ids.
func (h *httpLoad) createPending(ctx context.Context, clients, n int, key string, header http.Header) ([]string, error) {
	var mu sync.Mutex
	ids := make([]string, 0, n)
	p, err := drive(ctx, clients, n, func(ctx context.Context, _ int) error {
		rec, err := h.submit(ctx, key, header)
		if err != nil {
			return err
		}
		if rec.Status != "pending" {
			return fmt.Errorf("request %s is %s, want pending", rec.ID, rec.Status)
		}
		mu.Lock()
		ids = append(ids, rec.ID)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if p.errors > 0 {
		return nil, fmt.Errorf("create pending requests: %d errors, first: %w", p.errors, p.firstErr)
	}
	if len(ids) != n {
		return nil, errors.New("create pending requests: some were not created")
	}
	return ids, nil
}

// Package client is the Go SDK for callers of a switchboard gateway: it
// submits requests over HTTP, reads and long-polls their records, follows
// their Server-Sent Events, cancels them, and verifies the signed webhooks
// the gateway delivers to Reply-To URLs. Errors the gateway answers with
// (RFC 9457 problem details) come back as *Error.
//
// Services that answer requests over AMQP use package responder instead.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// MaxWait is the longest wait the gateway allows in one call (its default
// SWITCHBOARD_MAX_WAIT); Wait and Do split longer waits into calls of at
// most this long.
const MaxWait = 60 * time.Second

// maxRecordSize bounds the JSON answers the client reads: the gateway's
// largest reply (8 MiB by default) plus the request and the record around it.
const maxRecordSize = 64 << 20

// Client calls one switchboard gateway. It is safe for concurrent use.
type Client struct {
	base *url.URL
	key  string
	hc   *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithKey authenticates every call with the API key, as
// Authorization: Bearer <key>.
func WithKey(key string) Option { return func(c *Client) { c.key = key } }

// WithHTTPClient makes the client send its calls with hc instead of
// http.DefaultClient. hc should have no overall Timeout shorter than the
// longest wait asked for: long-polls and event streams stay open.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client of the gateway at baseURL, e.g.
// "http://127.0.0.1:8080" (a path prefix is kept, for a gateway behind a
// reverse proxy).
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want an absolute http or https URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("client: base URL %q: no query, fragment or credentials allowed", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	c := &Client{base: u, hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = http.DefaultClient
	}
	return c, nil
}

// The statuses of a request (CONTRACT §2).
const (
	StatusQueued     = "queued"     // recorded, waiting in the outbox for the broker
	StatusPending    = "pending"    // published; waiting for the reply
	StatusReplied    = "replied"    // the responder replied
	StatusFailed     = "failed"     // the responder replied with an error
	StatusExpired    = "expired"    // no reply before the deadline
	StatusUnroutable = "unroutable" // no queue was bound for the routing key
	StatusCancelled  = "cancelled"  // cancelled with Cancel
	// StatusPartial: a gather (Expect-Replies: N) reached its deadline with
	// some but fewer than N replies; Replies holds them.
	StatusPartial = "partial"
)

// Record is a request record as the gateway answers it: the JSON of
// GET /v1/requests/{id}.
type Record struct {
	ID         uuid.UUID       `json:"id"`
	RoutingKey string          `json:"routing_key"`
	Status     string          `json:"status"`
	Time       int64           `json:"time"`       // creation time, Unix milliseconds
	ExpiresAt  int64           `json:"expires_at"` // deadline, Unix milliseconds
	ReplyTo    *string         `json:"reply_to"`   // the webhook URL, if any
	Request    json.RawMessage `json:"request"`    // the submitted body
	Reply      *Reply          `json:"reply"`      // nil until there is one; a gather's first reply
	// RepliesExpected is the request's Expect-Replies: 1 for an ordinary
	// request, N for a gather of N, nil for Expect-Replies: all.
	RepliesExpected *int `json:"replies_expected"`
	// Replies lists every reply kept, in arrival order (one per responder
	// for a gather); for an ordinary request, its reply or none.
	Replies []GatheredReply `json:"replies"`
	// PickedUpAt is when a responder started on it (its request.received
	// event, or at the latest its reply), Unix milliseconds; nil until then.
	PickedUpAt *int64 `json:"picked_up_at"`
	// Stalled says it is open and no responder picked it up within the
	// gateway's stall time: it waits in a queue nobody reads.
	Stalled bool `json:"stalled"`
	// Delivery is the webhook delivery and its attempts, when the gateway
	// includes it (null without Reply-To or before the request ends).
	Delivery json.RawMessage `json:"delivery,omitempty"`

	// ReadToken is the short-lived token from Submit's Read-Token header,
	// which reads this request alone (as ?access_token=), e.g. for a web
	// page's EventSource. Empty on records from other calls.
	ReadToken string `json:"-"`
}

// Reply is a stored reply.
type Reply struct {
	MessageID     string          `json:"message_id"`
	CorrelationID string          `json:"correlation_id"`
	Time          int64           `json:"time"` // Unix milliseconds
	Body          json.RawMessage `json:"body"`
}

// GatheredReply is one of a request's replies, with who sent it.
type GatheredReply struct {
	Reply
	// From names the responder: its AMQP app_id, the Reply-From header it
	// sent to POST /v1/replies, or else the reply's message id.
	From string `json:"from"`
	// Status is "ok", or "error" for a reply marked status: error.
	Status string `json:"status"`
}

// Terminal reports whether the request has ended: its status will not
// change again.
func (r *Record) Terminal() bool {
	switch r.Status {
	case StatusReplied, StatusFailed, StatusExpired, StatusUnroutable, StatusCancelled, StatusPartial:
		return true
	}
	return false
}

// SubmitOptions are the optional headers of a submit. The zero value (or a
// nil pointer) lets the gateway pick: a v7 Message-ID, its own clock, a 60 s
// timeout, no webhook, and no wait.
type SubmitOptions struct {
	// MessageID is the request's id. Submitting the same id with the same
	// routing key and body again is idempotent, so a caller that sets it may
	// retry a submit whose answer it lost.
	MessageID uuid.UUID
	Time      int64  // creation time, Unix milliseconds
	ReplyTo   string // webhook URL for the outcome
	// Timeout is the request's deadline from its arrival, sent as
	// Request-Timeout in whole seconds (rounded up).
	Timeout time.Duration
	// Wait asks the gateway to hold the answer until the request ends or
	// this long passes (Prefer: wait, whole seconds rounded up, capped by
	// the gateway at MaxWait by default).
	Wait time.Duration
	// ExpectReplies gathers that many replies, one per responder
	// (Expect-Replies: N, 1 to 100); 0 sends nothing (one reply).
	// ExpectAll gathers every reply until the deadline.
	ExpectReplies int
}

// ExpectAll as SubmitOptions.ExpectReplies sends Expect-Replies: all.
const ExpectAll = -1

// Submit sends body as a request with the routing key, POST /a/b for a.b.
// body is marshalled to JSON; a json.RawMessage or []byte is sent as is. It
// answers the record (202, or 200 when a wait ended with the request), with
// Record.ReadToken set, or an *Error.
func (c *Client) Submit(ctx context.Context, routingKey string, body any, o *SubmitOptions) (*Record, error) {
	if o == nil {
		o = &SubmitOptions{}
	}
	path, err := routingPath(routingKey)
	if err != nil {
		return nil, err
	}
	payload, err := marshalBody(body)
	if err != nil {
		return nil, err
	}
	req, err := c.newRequest(ctx, http.MethodPost, path, nil, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if o.MessageID != uuid.Nil {
		req.Header.Set("Message-ID", o.MessageID.String())
	}
	if o.Time != 0 {
		req.Header.Set("Time", strconv.FormatInt(o.Time, 10))
	}
	if o.ReplyTo != "" {
		req.Header.Set("Reply-To", o.ReplyTo)
	}
	if o.Timeout > 0 {
		req.Header.Set("Request-Timeout", strconv.FormatInt(ceilSeconds(o.Timeout), 10))
	}
	switch {
	case o.ExpectReplies == ExpectAll:
		req.Header.Set("Expect-Replies", "all")
	case o.ExpectReplies != 0:
		req.Header.Set("Expect-Replies", strconv.Itoa(o.ExpectReplies))
	}
	if o.Wait > 0 {
		req.Header.Set("Prefer", "wait="+strconv.FormatInt(ceilSeconds(o.Wait), 10))
	}
	rec, res, err := c.doRecord(req, http.StatusOK, http.StatusAccepted)
	if err != nil {
		return nil, fmt.Errorf("submit %s: %w", routingKey, err)
	}
	rec.ReadToken = res.Header.Get("Read-Token")
	return rec, nil
}

// Get reads the request's record as it is now.
func (c *Client) Get(ctx context.Context, id uuid.UUID) (*Record, error) {
	rec, err := c.get(ctx, id, 0)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", id, err)
	}
	return rec, nil
}

// get reads the record, long-polling for wait (whole seconds) when wait > 0.
func (c *Client) get(ctx context.Context, id uuid.UUID, wait time.Duration) (*Record, error) {
	var q url.Values
	if wait > 0 {
		q = url.Values{"wait": {strconv.FormatInt(ceilSeconds(wait), 10)}}
	}
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/requests/"+id.String(), q, nil)
	if err != nil {
		return nil, err
	}
	rec, _, err := c.doRecord(req, http.StatusOK)
	return rec, err
}

// Cancel cancels a queued or pending request and answers its record, now
// cancelled. A request that already ended gives an *Error of kind
// not-cancellable (IsConflict); cancelling twice is not an error.
func (c *Client) Cancel(ctx context.Context, id uuid.UUID) (*Record, error) {
	req, err := c.newRequest(ctx, http.MethodDelete, "/v1/requests/"+id.String(), nil, nil)
	if err != nil {
		return nil, err
	}
	rec, _, err := c.doRecord(req, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("cancel %s: %w", id, err)
	}
	return rec, nil
}

// newRequest builds a call of path (already escaped) under the base URL.
func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// doRecord sends req and decodes a record from an answer with one of the
// statuses ok; any other answer is an *Error.
func (c *Client) doRecord(req *http.Request, ok ...int) (*Record, *http.Response, error) {
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	for _, s := range ok {
		if res.StatusCode == s {
			var rec Record
			if err := json.NewDecoder(io.LimitReader(res.Body, maxRecordSize)).Decode(&rec); err != nil {
				return nil, res, fmt.Errorf("decode record (HTTP %d): %w", res.StatusCode, err)
			}
			return &rec, res, nil
		}
	}
	return nil, res, readError(res)
}

// routingPath turns a.b into /a/b, escaping each segment so that the
// gateway, which reads paths undecoded, judges exactly the key given.
func routingPath(routingKey string) (string, error) {
	if routingKey == "" {
		return "", errors.New("client: empty routing key")
	}
	var b strings.Builder
	for seg := range strings.SplitSeq(routingKey, ".") {
		if seg == "" {
			return "", fmt.Errorf("client: routing key %q has an empty segment", routingKey)
		}
		b.WriteByte('/')
		b.WriteString(url.PathEscape(seg))
	}
	return b.String(), nil
}

// marshalBody returns the JSON of body; json.RawMessage and []byte are
// taken as JSON already (the gateway checks them).
func marshalBody(body any) ([]byte, error) {
	switch b := body.(type) {
	case json.RawMessage:
		return b, nil
	case []byte:
		return b, nil
	}
	out, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("client: marshal body: %w", err)
	}
	return out, nil
}

// ceilSeconds is d in whole seconds, rounded up, at least 1.
func ceilSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

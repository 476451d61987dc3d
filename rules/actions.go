package rules

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
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-gw/switchboard/correlation"
)

// Action is one thing a rule does when it matches. Plan renders what the
// action would do for an event, without side effects (the dry run stops
// there); Do does it. Keeping the two apart is also what makes a retry
// send the very same output.
type Action interface {
	// Kind is the action's key in a rule file: publish, request or http.
	Kind() string
	// Plan renders the action's output for in.Event.
	Plan(ctx context.Context, in PlanInput) (Output, error)
	// Do carries out out. An error wrapped by Permanent is not retried.
	Do(ctx context.Context, deps Deps, out Output) error
	// Retries is how often a failed Do is retried, or -1 for the engine's
	// default.
	Retries() int
}

// PlanInput is what an action renders its output from.
type PlanInput struct {
	Event Event
	Rule  string
	// Index is the action's position in its rule, from 0.
	Index int
	Now   time.Time

	vars activation
}

// Output is an action's rendered output: what is published, requested or
// sent. Fields that do not apply to the kind are empty.
type Output struct {
	Kind string `json:"kind"`
	// ID is derived from the input event and the action (see OutputID): the
	// published event's id and message id, the request's id, the HTTP
	// Idempotency-Key.
	ID         uuid.UUID         `json:"id"`
	Exchange   string            `json:"exchange,omitempty"`
	RoutingKey string            `json:"routing_key,omitempty"`
	Type       string            `json:"type,omitempty"` // publish: the event type
	Method     string            `json:"method,omitempty"`
	URL        string            `json:"url,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	// Body is the published CloudEvent, the request body or the HTTP body.
	Body json.RawMessage `json:"body,omitempty"`
	// ExpiresAt is a request's deadline.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// outputNamespace is the namespace of output ids. It never changes: ids
// derived from the same event must stay the same across versions.
var outputNamespace = uuid.MustParse("6f0e3c0a-7d43-4b7e-9a5e-2c1b8f4d9e61")

// OutputID is the id of the output of the action at index index of rule
// for the event with source evSource and id evID. A redelivered event gets
// the same ids, so consumers that dedupe by id see each output once.
func OutputID(evSource, evID, rule string, index int) uuid.UUID {
	return uuid.NewSHA1(outputNamespace, []byte(evSource+"\x00"+evID+"\x00"+rule+"\x00"+strconv.Itoa(index)))
}

// Publisher publishes a message and waits for the broker's confirm
// (*gateway.Gateway has it).
type Publisher interface {
	Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error
}

// Submitter submits a request through switchboard's own request path, so it
// gets a record, a reply, a status and webhooks like any other
// (*gateway.Gateway has it). created is false when the id was already taken
// by the same request.
type Submitter interface {
	Submit(ctx context.Context, n correlation.NewRequest) (r correlation.Request, created bool, err error)
}

// permanentError is a failure that retrying cannot mend.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked by Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// retriesOf returns *n, or -1 when n is nil.
func retriesOf(n *int) int {
	if n == nil {
		return -1
	}
	return *n
}

// PublishAction publishes a CloudEvent derived from the input event.
//
// The event's id is the output id, its source switchboard/rules/<rule>,
// its time the input event's time (the occurrence it is derived from, so
// that a redelivered input gives the same bytes), and its switchboardhops
// the input's plus one. No correlationid is set: the input Event carries no
// extension attributes to copy it from.
type PublishAction struct {
	Exchange   string // literal
	RoutingKey string // CEL, string
	Type       string // literal
	Data       string // CEL, JSON value; empty: the event has no data
	MaxRetries *int

	routingKey, data *expr
}

// Kind implements Action.
func (a *PublishAction) Kind() string { return "publish" }

// Retries implements Action.
func (a *PublishAction) Retries() int { return retriesOf(a.MaxRetries) }

// outputEvent is a published CloudEvent.
type outputEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
	Hops            int             `json:"switchboardhops"`
}

// Plan implements Action.
func (a *PublishAction) Plan(ctx context.Context, in PlanInput) (Output, error) {
	key, err := a.routingKey.evalString(ctx, in.vars)
	if err != nil {
		return Output{}, fmt.Errorf("routing_key: %w", err)
	}
	if key == "" || len(key) > maxAMQPShortString {
		return Output{}, fmt.Errorf("routing_key: %q is not a routing key (1 to 255 bytes)", key)
	}
	out := Output{Kind: a.Kind(), ID: OutputID(in.Event.Source, in.Event.ID, in.Rule, in.Index),
		Exchange: a.Exchange, RoutingKey: key, Type: a.Type}
	ce := outputEvent{SpecVersion: "1.0", ID: out.ID.String(), Source: "switchboard/rules/" + in.Rule,
		Type: a.Type, Time: in.Event.Time.UTC(), Hops: in.Event.Hops + 1}
	if ce.Time.IsZero() {
		ce.Time = in.Now.UTC()
	}
	if a.data != nil {
		if ce.Data, err = a.data.evalJSON(ctx, in.vars); err != nil {
			return Output{}, fmt.Errorf("data: %w", err)
		}
		ce.DataContentType = "application/json"
	}
	if out.Body, err = json.Marshal(ce); err != nil {
		return Output{}, fmt.Errorf("encode event: %w", err)
	}
	return out, nil
}

// Do implements Action.
func (a *PublishAction) Do(ctx context.Context, deps Deps, out Output) error {
	if deps.Publisher == nil {
		return Permanent(errors.New("no publisher is configured"))
	}
	err := deps.Publisher.Publish(ctx, out.Exchange, out.RoutingKey, amqp.Publishing{
		ContentType: "application/cloudevents+json",
		MessageId:   out.ID.String(),
		Type:        out.Type,
		Timestamp:   time.Now(),
		Body:        out.Body,
	})
	if err != nil {
		return fmt.Errorf("publish to %s with key %s: %w", out.Exchange, out.RoutingKey, err)
	}
	return nil
}

// DefaultRequestTimeout is a request action's deadline when it sets none.
const DefaultRequestTimeout = time.Hour

// RequestAction submits a request through switchboard's request path. The
// request id is the output id, so a redelivered event repeats the same
// request (same id, same body), which the gateway answers idempotently.
type RequestAction struct {
	RoutingKey string        // literal
	Body       string        // CEL, JSON value
	Timeout    time.Duration // 0: DefaultRequestTimeout
	MaxRetries *int

	body *expr
}

// Kind implements Action.
func (a *RequestAction) Kind() string { return "request" }

// Retries implements Action.
func (a *RequestAction) Retries() int { return retriesOf(a.MaxRetries) }

// Plan implements Action.
func (a *RequestAction) Plan(ctx context.Context, in PlanInput) (Output, error) {
	body, err := a.body.evalJSON(ctx, in.vars)
	if err != nil {
		return Output{}, fmt.Errorf("body: %w", err)
	}
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	expires := in.Now.Add(timeout).UTC()
	return Output{Kind: a.Kind(), ID: OutputID(in.Event.Source, in.Event.ID, in.Rule, in.Index),
		RoutingKey: a.RoutingKey, Body: body, ExpiresAt: &expires}, nil
}

// Do implements Action. A request the broker could not route (no
// responder's queue is bound) is a failure.
func (a *RequestAction) Do(ctx context.Context, deps Deps, out Output) error {
	if deps.Submitter == nil {
		return Permanent(errors.New("no submitter is configured"))
	}
	now := time.Now()
	n := correlation.NewRequest{ID: out.ID, RoutingKey: out.RoutingKey, Time: now.UnixMilli(), Body: out.Body}
	if out.ExpiresAt != nil {
		n.ExpiresAt = *out.ExpiresAt
	} else {
		n.ExpiresAt = now.Add(DefaultRequestTimeout)
	}
	r, _, err := deps.Submitter.Submit(ctx, n)
	switch {
	case errors.Is(err, correlation.ErrConflict):
		return Permanent(fmt.Errorf("submit request %s: %w", out.ID, err))
	case err != nil:
		return fmt.Errorf("submit request %s: %w", out.ID, err)
	case r.Status == correlation.StatusUnroutable:
		return Permanent(fmt.Errorf("request %s to %s is unroutable: no queue is bound to its routing key", out.ID, out.RoutingKey))
	}
	return nil
}

// HTTPAction sends a JSON HTTP request. It carries Idempotency-Key: the
// output id, the same on every attempt and for a redelivered event.
type HTTPAction struct {
	Method     string            // literal, default POST
	URL        string            // CEL, string
	Headers    map[string]string // name → CEL, string
	Body       string            // CEL, JSON value; empty: no body
	MaxRetries *int

	url     *expr
	headers map[string]*expr
	body    *expr
}

// Kind implements Action.
func (a *HTTPAction) Kind() string { return "http" }

// Retries implements Action.
func (a *HTTPAction) Retries() int { return retriesOf(a.MaxRetries) }

// Plan implements Action.
func (a *HTTPAction) Plan(ctx context.Context, in PlanInput) (Output, error) {
	raw, err := a.url.evalString(ctx, in.vars)
	if err != nil {
		return Output{}, fmt.Errorf("url: %w", err)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Output{}, fmt.Errorf("url: %q is not an http or https URL", raw)
	}
	out := Output{Kind: a.Kind(), ID: OutputID(in.Event.Source, in.Event.ID, in.Rule, in.Index),
		Method: a.Method, URL: u.String(), Headers: map[string]string{}}
	for name, e := range a.headers {
		v, err := e.evalString(ctx, in.vars)
		if err != nil {
			return Output{}, fmt.Errorf("headers.%s: %w", name, err)
		}
		out.Headers[http.CanonicalHeaderKey(name)] = v
	}
	if a.body != nil {
		if out.Body, err = a.body.evalJSON(ctx, in.vars); err != nil {
			return Output{}, fmt.Errorf("body: %w", err)
		}
		out.Headers["Content-Type"] = "application/json"
	}
	out.Headers["Idempotency-Key"] = out.ID.String()
	return out, nil
}

// maxErrorBody is how much of a failed response's body an error quotes.
const maxErrorBody = 512

// Do implements Action: 2xx succeeds; 429, 5xx and transport errors
// (timeouts, refused connections) are retried; any other status fails at
// once.
func (a *HTTPAction) Do(ctx context.Context, deps Deps, out Output) error {
	if deps.HTTP == nil {
		return Permanent(errors.New("no HTTP client is configured"))
	}
	var body io.Reader
	if out.Body != nil {
		body = bytes.NewReader(out.Body)
	}
	req, err := http.NewRequestWithContext(ctx, out.Method, out.URL, body)
	if err != nil {
		return Permanent(fmt.Errorf("build request: %w", err))
	}
	for k, v := range out.Headers {
		req.Header.Set(k, v)
	}
	resp, err := deps.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", out.Method, out.URL, err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err = fmt.Errorf("%s %s: status %d: %s", out.Method, out.URL, resp.StatusCode, bytes.TrimSpace(snippet))
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return err
	}
	return Permanent(err)
}

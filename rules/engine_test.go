package rules_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/rules"
	"github.com/switchboard-gw/switchboard/webhook"
)

// published is one message given to fakePublisher.
type published struct {
	exchange, key string
	msg           amqp.Publishing
}

// fakePublisher records publishes; the first failFirst calls fail (all of
// them when failFirst < 0).
type fakePublisher struct {
	mu        sync.Mutex
	calls     int
	failFirst int
	msgs      []published
}

func (p *fakePublisher) Publish(_ context.Context, exchange, key string, msg amqp.Publishing) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.failFirst < 0 || p.calls <= p.failFirst {
		return errors.New("broker away")
	}
	p.msgs = append(p.msgs, published{exchange, key, msg})
	return nil
}

func (p *fakePublisher) published() []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]published(nil), p.msgs...)
}

func (p *fakePublisher) callCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// fakeSubmitter answers like the gateway's Submit: a new id creates a
// request, a known id with the same routing key and body is an idempotent
// repeat (created false), a known id with another body a conflict.
type fakeSubmitter struct {
	mu      sync.Mutex
	status  correlation.Status // of new requests; default pending
	calls   []correlation.NewRequest
	created []bool
	known   map[uuid.UUID]correlation.Request
}

func (s *fakeSubmitter) Submit(_ context.Context, n correlation.NewRequest) (correlation.Request, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, n)
	if s.known == nil {
		s.known = map[uuid.UUID]correlation.Request{}
	}
	if r, ok := s.known[n.ID]; ok {
		s.created = append(s.created, false)
		if r.RoutingKey != n.RoutingKey || !bytes.Equal(r.Body, n.Body) {
			return correlation.Request{}, false, correlation.ErrConflict
		}
		return r, false, nil
	}
	status := s.status
	if status == "" {
		status = correlation.StatusPending
	}
	r := correlation.Request{ID: n.ID, RoutingKey: n.RoutingKey, Status: status, Body: n.Body, ExpiresAt: n.ExpiresAt}
	s.known[n.ID] = r
	s.created = append(s.created, true)
	return r, true, nil
}

func (s *fakeSubmitter) snapshot() ([]correlation.NewRequest, []bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]correlation.NewRequest(nil), s.calls...), append([]bool(nil), s.created...)
}

// fakeFirings records firings, or fails with err.
type fakeFirings struct {
	mu      sync.Mutex
	err     error
	firings []rules.Firing
}

func (f *fakeFirings) Record(_ context.Context, fr rules.Firing) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.firings = append(f.firings, fr)
	return nil
}

func (f *fakeFirings) all() []rules.Firing {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]rules.Firing(nil), f.firings...)
}

// deadLetter is one kept dead letter.
type deadLetter struct {
	reason string
	in     correlation.IncomingReply
}

type fakeDeadLetters struct {
	mu    sync.Mutex
	kept  []deadLetter
	count atomic.Int64
}

func (d *fakeDeadLetters) KeepDeadLetter(_ context.Context, reason string, in correlation.IncomingReply) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.kept = append(d.kept, deadLetter{reason, in})
	d.count.Add(1)
	return nil
}

func (d *fakeDeadLetters) all() []deadLetter {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]deadLetter(nil), d.kept...)
}

// bundle is an engine over fakes.
type bundle struct {
	engine *rules.Engine
	pub    *fakePublisher
	sub    *fakeSubmitter
	fir    *fakeFirings
	dl     *fakeDeadLetters
	path   string
}

// setup loads content as the engine's rule set over fresh fakes, with
// fast retries.
func setup(t *testing.T, content string) *bundle {
	t.Helper()
	set, path, err := loadOne(t, content)
	require.NoError(t, err)
	b := &bundle{pub: &fakePublisher{}, sub: &fakeSubmitter{}, fir: &fakeFirings{}, dl: &fakeDeadLetters{}, path: path}
	b.engine = rules.NewEngine(rules.EngineConfig{RetryBase: time.Millisecond, RetryMax: 4 * time.Millisecond},
		rules.Deps{Publisher: b.pub, Submitter: b.sub, HTTP: loopbackClient(), Firings: b.fir, DeadLetters: b.dl}, nil)
	b.engine.Swap(set)
	return b
}

// loopbackClient is the webhook client with a guard that lets loopback
// through, as an operator would allow-list an internal receiver.
func loopbackClient() *http.Client {
	p, err := webhook.ParseAllowList("127.0.0.1, ::1")
	if err != nil {
		panic(err)
	}
	return webhook.NewClient(webhook.NewGuard(p, nil, nil), 5*time.Second)
}

// seedRules are the seed document's level-change and semantic-change
// rules.
const seedRules = `
sources:
  workspace: {amqp: {exchange: switchboard.events, bindings: ["workflow.#"]}}
  archive: {hook: {}}
rules:
  - name: capability-status
    description: A workflow status that names a capability becomes a capability-status event.
    source: workspace
    when: event.type == "workflow-status" && has(event.data.capability_id)
    actions:
      - publish:
          exchange: switchboard.events
          routing_key: '"capability-status." + event.data.capability_id'
          type: capability-status
          data: '{"capability_id": event.data.capability_id, "status": event.data.status}'
  - name: vla-calibration
    description: A VLA ingestion needs calibrating.
    source: archive
    when: event.type == "ingestion-complete" && event.data.instrument == "VLA"
    actions:
      - request:
          routing_key: capability.standard-calibration
          body: '{"ingestion": event.data}'
          timeout: 2h
`

func workflowStatus(id string, data string) rules.Event {
	return rules.Event{ID: id, Source: "workspaces", Type: "workflow-status",
		Time: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC), Data: json.RawMessage(data), Hops: 2}
}

func TestEnginePublishes(t *testing.T) {
	t.Parallel()
	b := setup(t, seedRules)
	ctx := context.Background()
	ev := workflowStatus("ev-1", `{"capability_id": "cap-7", "status": "running", "workflow_id": 3}`)

	require.NoError(t, b.engine.Handle(ctx, "workspace", ev))
	msgs := b.pub.published()
	require.Len(t, msgs, 1)
	m := msgs[0]
	id := rules.OutputID("workspaces", "ev-1", "capability-status", 0)
	require.Equal(t, "switchboard.events", m.exchange)
	require.Equal(t, "capability-status.cap-7", m.key)
	require.Equal(t, "application/cloudevents+json", m.msg.ContentType)
	require.Equal(t, id.String(), m.msg.MessageId)
	require.Equal(t, "capability-status", m.msg.Type)
	require.JSONEq(t, `{
		"specversion": "1.0", "id": "`+id.String()+`", "source": "switchboard/rules/capability-status",
		"type": "capability-status", "time": "2026-05-01T10:00:00Z", "datacontenttype": "application/json",
		"data": {"capability_id": "cap-7", "status": "running"}, "switchboardhops": 3}`, string(m.msg.Body))

	f := b.fir.all()
	require.Len(t, f, 1)
	require.Equal(t, rules.OutcomeMatched, f[0].Outcome)
	require.Equal(t, "capability-status", f[0].Rule)
	require.Equal(t, "workspace", f[0].Source)
	require.Equal(t, "ev-1", f[0].EventID)
	require.Equal(t, "workflow-status", f[0].EventType)
	require.Equal(t, []rules.ActionResult{{Kind: "publish", OutputID: id.String(), Outcome: rules.ActionOK, Attempts: 1}}, f[0].Actions)
	var stored rules.Event
	require.NoError(t, json.Unmarshal(f[0].Event, &stored))
	require.Equal(t, "ev-1", stored.ID)
	require.Empty(t, b.dl.all())

	// Without capability_id the rule does not match: nothing happens and
	// nothing is recorded. Rules of other sources are not consulted.
	require.NoError(t, b.engine.Handle(ctx, "workspace", workflowStatus("ev-2", `{"status": "running"}`)))
	require.NoError(t, b.engine.Handle(ctx, "archive", workflowStatus("ev-3", `{"capability_id": "x"}`)))
	require.Len(t, b.pub.published(), 1)
	require.Len(t, b.fir.all(), 1)

	st := b.engine.Rules()
	require.Len(t, st, 2)
	require.Equal(t, rules.RuleStatus{
		Name:        "capability-status",
		Description: "A workflow status that names a capability becomes a capability-status event.",
		Source:      "workspace",
		File:        b.path,
		When:        `event.type == "workflow-status" && has(event.data.capability_id)`,
		Actions:     []string{"publish"},
		Matches:     1,
		ActionsOK:   1,
	}, st[0])
	require.Equal(t, int64(0), st[1].Matches)
}

// A redelivered event yields the same output ids: the same message id for a
// published event, and the same request id (an idempotent repeat) for a
// request.
func TestEngineRedeliveryIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t, seedRules)
	ctx := context.Background()
	ingest := rules.Event{ID: "obs-42", Source: "archive", Type: "ingestion-complete",
		Data: json.RawMessage(`{"instrument": "VLA", "observation": "obs-42", "size": 1.5e9}`)}
	for range 2 {
		require.NoError(t, b.engine.Handle(ctx, "archive", ingest))
		require.NoError(t, b.engine.Handle(ctx, "workspace", workflowStatus("ev-1", `{"capability_id": "c", "status": "ok"}`)))
	}

	calls, created := b.sub.snapshot()
	require.Len(t, calls, 2)
	want := rules.OutputID("archive", "obs-42", "vla-calibration", 0)
	require.Equal(t, want, calls[0].ID)
	require.Equal(t, want, calls[1].ID)
	require.Equal(t, "capability.standard-calibration", calls[0].RoutingKey)
	require.JSONEq(t, `{"ingestion": {"instrument": "VLA", "observation": "obs-42", "size": 1500000000}}`, string(calls[0].Body))
	require.Equal(t, calls[0].Body, calls[1].Body, "the same bytes, or the gateway would call it a conflict")
	require.Equal(t, []bool{true, false}, created, "the second submit is an idempotent repeat")
	require.WithinDuration(t, time.Now().Add(2*time.Hour), calls[0].ExpiresAt, time.Minute)
	require.WithinDuration(t, time.Now(), time.UnixMilli(calls[0].Time), time.Minute)

	msgs := b.pub.published()
	require.Len(t, msgs, 2)
	require.Equal(t, msgs[0].msg.MessageId, msgs[1].msg.MessageId)
	require.Equal(t, msgs[0].msg.Body, msgs[1].msg.Body)

	for _, f := range b.fir.all() {
		require.Equal(t, rules.OutcomeMatched, f.Outcome)
	}
	// ALMA is not VLA.
	alma := ingest
	alma.ID, alma.Data = "obs-43", json.RawMessage(`{"instrument": "ALMA"}`)
	require.NoError(t, b.engine.Handle(ctx, "archive", alma))
	calls, _ = b.sub.snapshot()
	require.Len(t, calls, 2)
}

func TestOutputIDIsDeterministic(t *testing.T) {
	t.Parallel()
	a := rules.OutputID("src", "ev", "rule", 0)
	require.Equal(t, a, rules.OutputID("src", "ev", "rule", 0))
	require.Equal(t, uuid.Version(5), a.Version())
	for _, other := range []uuid.UUID{
		rules.OutputID("src", "ev", "rule", 1),
		rules.OutputID("src", "ev", "rule2", 0),
		rules.OutputID("src", "ev2", "rule", 0),
		rules.OutputID("src2", "ev", "rule", 0),
		rules.OutputID("src\x00ev", "", "rule", 0), // the separator keeps fields apart
	} {
		require.NotEqual(t, a, other)
	}
	// The namespace is fixed: this id must never change across versions.
	require.Equal(t, "4f4662b0-8668-5674-884e-13a5b1039c9b", a.String())
}

func TestEngineHopLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, seedRules)
	ev := workflowStatus("loop-1", `{"capability_id": "c", "status": "s"}`)
	ev.Hops = 9
	require.NoError(t, b.engine.Handle(context.Background(), "workspace", ev))
	require.Empty(t, b.pub.published(), "an event past the limit is not acted on")
	dl := b.dl.all()
	require.Len(t, dl, 1)
	require.Equal(t, rules.ReasonHopLimit, dl[0].reason)
	require.Equal(t, "rules", dl[0].in.Source)
	require.Equal(t, "loop-1", dl[0].in.MessageID)
	require.Equal(t, "workspace", dl[0].in.Headers["source"])
	require.Equal(t, "the event has 9 hops, past the limit of 8", dl[0].in.Headers["error"])
	f := b.fir.all()
	require.Len(t, f, 1)
	require.Equal(t, rules.OutcomeHopLimit, f[0].Outcome)
	require.Equal(t, int64(1), b.engine.Rules()[0].Failures)

	// At the limit it still runs.
	ev.Hops = 8
	require.NoError(t, b.engine.Handle(context.Background(), "workspace", ev))
	require.Len(t, b.pub.published(), 1)
}

func TestEngineConditionError(t *testing.T) {
	t.Parallel()
	b := setup(t, `
sources:
  s: {hook: {}}
rules:
  - name: strict
    description: Reads a field that may be missing.
    source: s
    when: event.data.level > 3
    actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]
  - name: lenient
    description: Runs anyway.
    source: s
    when: "true"
    actions: [{publish: {exchange: x, routing_key: '"k2"', type: t}}]
`)
	ev := rules.Event{ID: "e1", Source: "s", Type: "t", Data: json.RawMessage(`{"other": 1}`)}
	require.NoError(t, b.engine.Handle(context.Background(), "s", ev))

	msgs := b.pub.published()
	require.Len(t, msgs, 1, "the other rule still ran")
	require.Equal(t, "k2", msgs[0].key)
	f := b.fir.all()
	require.Len(t, f, 2)
	require.Equal(t, "strict", f[0].Rule)
	require.Equal(t, rules.OutcomeConditionError, f[0].Outcome)
	require.Equal(t, "when: no such key: level", f[0].Error)
	require.Empty(t, f[0].Actions)
	require.Equal(t, rules.OutcomeMatched, f[1].Outcome)
	dl := b.dl.all()
	require.Len(t, dl, 1)
	require.Equal(t, rules.ReasonConditionError, dl[0].reason)
	require.Equal(t, "strict", dl[0].in.Headers["rule"])
	require.Equal(t, "", dl[0].in.CorrelationID)
	require.Equal(t, int64(1), b.engine.Rules()[0].Failures)
}

func TestEngineActionFailsAfterRetries(t *testing.T) {
	t.Parallel()
	b := setup(t, `
sources:
  s: {hook: {}}
rules:
  - name: two-actions
    description: A publish that keeps failing, then a request.
    source: s
    when: "true"
    actions:
      - publish: {exchange: x, routing_key: '"k"', type: t, retries: 2}
      - request: {routing_key: work.do, body: 'event.data'}
`)
	b.pub.failFirst = -1
	ev := rules.Event{ID: "e1", Source: "s", Type: "t", Data: json.RawMessage(`{"n": 1}`)}
	require.NoError(t, b.engine.Handle(context.Background(), "s", ev), "a failure recorded is a decision: the event may be acked")

	require.Equal(t, 3, b.pub.callCount(), "one attempt and two retries")
	calls, _ := b.sub.snapshot()
	require.Len(t, calls, 1, "a failed action does not stop the next")

	pubID := rules.OutputID("s", "e1", "two-actions", 0).String()
	f := b.fir.all()
	require.Len(t, f, 1)
	require.Equal(t, rules.OutcomeFailed, f[0].Outcome)
	require.Equal(t, "actions[0].publish: publish to x with key k: broker away", f[0].Error)
	require.Equal(t, []rules.ActionResult{
		{Kind: "publish", OutputID: pubID, Outcome: rules.ActionFailed, Error: "publish to x with key k: broker away", Attempts: 3},
		{Kind: "request", OutputID: rules.OutputID("s", "e1", "two-actions", 1).String(), Outcome: rules.ActionOK, Attempts: 1},
	}, f[0].Actions)

	dl := b.dl.all()
	require.Len(t, dl, 1)
	require.Equal(t, rules.ReasonActionFailed, dl[0].reason)
	require.Equal(t, correlation.IncomingReply{
		Source: "rules", MessageID: "e1", CorrelationID: pubID, Time: dl[0].in.Time,
		Headers: map[string]any{"rule": "two-actions", "action": "actions[0].publish",
			"error": "publish to x with key k: broker away", "source": "s"},
		Body: dl[0].in.Body,
	}, dl[0].in)
	var kept rules.Event
	require.NoError(t, json.Unmarshal(dl[0].in.Body, &kept))
	require.Equal(t, ev.ID, kept.ID)
	require.JSONEq(t, `{"n": 1}`, string(kept.Data))

	st := b.engine.Rules()[0]
	require.Equal(t, int64(1), st.Matches)
	require.Equal(t, int64(1), st.ActionsOK)
	require.Equal(t, int64(1), st.Failures)
}

func TestEngineRetriesThenSucceeds(t *testing.T) {
	t.Parallel()
	b := setup(t, `
sources:
  s: {hook: {}}
rules:
  - {name: r, description: d, source: s, when: "true", actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]}
`)
	b.pub.failFirst = 2 // the engine's default is 3 retries
	require.NoError(t, b.engine.Handle(context.Background(), "s", rules.Event{ID: "e", Source: "s", Type: "t"}))
	f := b.fir.all()
	require.Len(t, f, 1)
	require.Equal(t, rules.OutcomeMatched, f[0].Outcome)
	require.Equal(t, 3, f[0].Actions[0].Attempts)
	require.Empty(t, b.dl.all())
}

func TestEngineUnroutableRequestFails(t *testing.T) {
	t.Parallel()
	b := setup(t, seedRules)
	b.sub.status = correlation.StatusUnroutable
	ev := rules.Event{ID: "obs-1", Source: "archive", Type: "ingestion-complete", Data: json.RawMessage(`{"instrument": "VLA"}`)}
	require.NoError(t, b.engine.Handle(context.Background(), "archive", ev))
	calls, _ := b.sub.snapshot()
	require.Len(t, calls, 1, "unroutable is final: no retries")
	f := b.fir.all()
	require.Len(t, f, 1)
	require.Equal(t, rules.OutcomeFailed, f[0].Outcome)
	id := rules.OutputID("archive", "obs-1", "vla-calibration", 0)
	require.Equal(t, "request "+id.String()+" to capability.standard-calibration is unroutable: no queue is bound to its routing key", f[0].Actions[0].Error)
	require.Len(t, b.dl.all(), 1)
}

func TestEngineRecordFailureKeepsTheEvent(t *testing.T) {
	t.Parallel()
	b := setup(t, seedRules)
	b.fir.err = correlation.DBError("record firing", correlation.ErrUnavailable)
	err := b.engine.Handle(context.Background(), "workspace", workflowStatus("e", `{"capability_id": "c"}`))
	require.ErrorIs(t, err, correlation.ErrUnavailable)
}

func TestEngineStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	set, _, err := loadOne(t, `
sources:
  s: {hook: {}}
rules:
  - {name: r, description: d, source: s, when: "true", actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]}
`)
	require.NoError(t, err)
	pub := &fakePublisher{failFirst: -1}
	fir := &fakeFirings{}
	e := rules.NewEngine(rules.EngineConfig{RetryBase: time.Hour}, rules.Deps{Publisher: pub, Firings: fir}, nil)
	e.Swap(set)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = e.Handle(ctx, "s", rules.Event{ID: "e", Source: "s", Type: "t"})
	require.ErrorIs(t, err, context.DeadlineExceeded, "nothing is decided: the source keeps the event")
	require.Empty(t, fir.all())
}

// A swapped set applies to the next event; counts stay with rule names.
func TestEngineSwap(t *testing.T) {
	t.Parallel()
	b := setup(t, seedRules)
	require.NoError(t, b.engine.Handle(context.Background(), "workspace", workflowStatus("e", `{"capability_id": "c", "status": "s"}`)))
	set, _, err := loadOne(t, `
sources:
  workspace: {hook: {}}
rules:
  - {name: capability-status, description: d, source: workspace, when: "false", actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]}
`)
	require.NoError(t, err)
	b.engine.Swap(set)
	require.Same(t, set, b.engine.Set())
	require.NoError(t, b.engine.Handle(context.Background(), "workspace", workflowStatus("e2", `{"capability_id": "c"}`)))
	require.Len(t, b.pub.published(), 1)
	st := b.engine.Rules()
	require.Len(t, st, 1)
	require.Equal(t, int64(1), st[0].Matches)
	require.Equal(t, "false", st[0].When)
}

func TestDryRun(t *testing.T) {
	t.Parallel()
	b := setup(t, seedRules+`
  - name: notify
    description: Tell ops.
    source: archive
    when: event.type == "ingestion-complete"
    actions:
      - http:
          url: '"https://ops.example.com/hooks/" + event.data.observation'
          headers: {x-source: '"switchboard"'}
          body: '{"id": event.data.observation, "bytes": b"hi", "at": timestamp("2026-01-02T03:04:05Z"), "took": duration("90s"), "n": 2, "u": 3u, "f": 0.5, "none": null}'
      - publish: {exchange: x, routing_key: 'event.data.missing', type: t}
`)
	ev := rules.Event{ID: "obs-9", Source: "archive", Type: "ingestion-complete", Hops: 1,
		Data: json.RawMessage(`{"instrument": "VLA", "observation": "obs-9"}`)}
	res := b.engine.Test(context.Background(), "archive", ev)
	require.Len(t, res, 2)

	require.Equal(t, "vla-calibration", res[0].Rule)
	require.True(t, res[0].Matched)
	require.Len(t, res[0].Actions, 1)
	out := res[0].Actions[0].Output
	require.NotNil(t, out)
	require.Equal(t, "request", out.Kind)
	require.Equal(t, rules.OutputID("archive", "obs-9", "vla-calibration", 0), out.ID)
	require.Equal(t, "capability.standard-calibration", out.RoutingKey)
	require.JSONEq(t, `{"ingestion": {"instrument": "VLA", "observation": "obs-9"}}`, string(out.Body))
	require.WithinDuration(t, time.Now().Add(2*time.Hour), *out.ExpiresAt, time.Minute)

	require.Equal(t, "notify", res[1].Rule)
	require.True(t, res[1].Matched)
	h := res[1].Actions[0].Output
	require.Equal(t, "POST", h.Method)
	require.Equal(t, "https://ops.example.com/hooks/obs-9", h.URL)
	id := rules.OutputID("archive", "obs-9", "notify", 0).String()
	require.Equal(t, map[string]string{"X-Source": "switchboard", "Content-Type": "application/json", "Idempotency-Key": id}, h.Headers)
	require.Equal(t, `{"at":"2026-01-02T03:04:05Z","bytes":"aGk=","f":0.5,"id":"obs-9","n":2,"none":null,"took":"1m30s","u":3}`, string(h.Body))
	require.Nil(t, res[1].Actions[1].Output)
	require.Equal(t, "routing_key: no such key: missing", res[1].Actions[1].Error)

	// Nothing was done or recorded.
	require.Zero(t, b.pub.callCount())
	calls, _ := b.sub.snapshot()
	require.Empty(t, calls)
	require.Empty(t, b.fir.all())
	require.Empty(t, b.dl.all())
	require.Zero(t, b.engine.Rules()[1].Matches)

	// All rules when no source is named; a non-match has no actions.
	all := b.engine.Test(context.Background(), "", rules.Event{ID: "x", Type: "other"})
	require.Len(t, all, 3)
	for _, r := range all {
		require.False(t, r.Matched, r.Rule)
		require.Empty(t, r.Actions)
	}
	require.Empty(t, firstErr(all), "&& stops at a false type check")

	// Past the hop limit nothing would run.
	ev.Hops = 20
	res = b.engine.Test(context.Background(), "archive", ev)
	require.Equal(t, "the event has 20 hops, past the limit of 8: it would be dead-lettered", res[0].Error)
	require.False(t, res[0].Matched)

	// The dry-run result is what the API serves.
	j, err := json.Marshal(b.engine.Test(context.Background(), "workspace", workflowStatus("w", `{"capability_id": "c", "status": "done"}`)))
	require.NoError(t, err)
	cid := rules.OutputID("workspaces", "w", "capability-status", 0).String()
	require.JSONEq(t, `[{"rule": "capability-status", "source": "workspace", "matched": true, "actions": [{"kind": "publish", "output": {
		"kind": "publish", "id": "`+cid+`", "exchange": "switchboard.events", "routing_key": "capability-status.c", "type": "capability-status",
		"body": {"specversion": "1.0", "id": "`+cid+`", "source": "switchboard/rules/capability-status", "type": "capability-status",
			"time": "2026-05-01T10:00:00Z", "datacontenttype": "application/json", "data": {"capability_id": "c", "status": "done"}, "switchboardhops": 3}}}]}]`, string(j))
}

// firstErr returns the first non-empty error of results.
func firstErr(results []rules.TestResult) string {
	for _, r := range results {
		if r.Error != "" {
			return r.Error
		}
	}
	return ""
}

func TestCELLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, `
sources:
  s: {hook: {}}
rules:
  - name: expensive
    description: A hundred thousand steps.
    source: s
    when: >-
      [0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, [0,1,2,3,4,5,6,7,8,9].all(c,
      [0,1,2,3,4,5,6,7,8,9].all(d, [0,1,2,3,4,5,6,7,8,9].all(e, a + b + c + d + e >= 0)))))
    actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]
  - name: wrong-type
    description: A dyn condition that is not a bool at run time.
    source: s
    when: event.data.name
    actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]
  - name: bad-json
    description: A map key that JSON cannot hold.
    source: s
    when: "true"
    actions: [{publish: {exchange: x, routing_key: '"k"', type: t, data: '{1: 2}'}}]
  - name: division
    description: Divides by zero.
    source: s
    when: 1 / (size(event.data.items) - size(event.data.items)) == 1
    actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]
`)
	data, _ := json.Marshal(map[string]any{"items": []int{1, 2}, "name": "n"})
	ev := rules.Event{ID: "e", Source: "s", Type: "t", Data: data}
	res := b.engine.Test(context.Background(), "s", ev)
	require.Len(t, res, 4)
	// The cost limit stops it; on a loaded machine (-race, parallel tests)
	// the evaluation's 1 s deadline may come first. Either is a recorded
	// failure, never a hang.
	require.Regexp(t, `^when: .*(cost limit exceeded|deadline exceeded|interrupted)`, res[0].Error)
	require.Equal(t, "when: evaluated to string, not bool", res[1].Error)
	require.Equal(t, "data: result has a map key of type int; JSON keys are strings", res[2].Actions[0].Error)
	require.Equal(t, "when: division by zero", res[3].Error)

	// Handled for real, each is a recorded failure, not a crash.
	require.NoError(t, b.engine.Handle(context.Background(), "s", ev))
	var outcomes []string
	for _, f := range b.fir.all() {
		outcomes = append(outcomes, f.Rule+":"+f.Outcome)
	}
	require.Equal(t, []string{"expensive:condition_error", "wrong-type:condition_error", "bad-json:failed", "division:condition_error"}, outcomes)
	require.Len(t, b.dl.all(), 4)

	// Event data that is not JSON is a condition error for every rule.
	res = b.engine.Test(context.Background(), "s", rules.Event{ID: "e", Data: json.RawMessage(`{`)})
	require.True(t, strings.HasPrefix(res[0].Error, "when: event data is not JSON: "), res[0].Error)
}

func TestCELEventFields(t *testing.T) {
	t.Parallel()
	b := setup(t, `
sources:
  s: {hook: {}}
rules:
  - name: fields
    description: Every attribute is visible.
    source: s
    when: >-
      event.id == "e" && event.source == "src" && event.type == "t" && event.subject == "sub" &&
      event.time == "2026-05-01T10:00:00.5Z" && event.switchboardhops == 2 && event.data.n == 3 &&
      event.data.list.exists(x, x == "b") && event.data.nested.deep == true
    actions:
      - publish: {exchange: x, routing_key: 'event.type.upperAscii() + "." + event.data.list.join(".")', type: t, data: 'event.data'}
`)
	ev := rules.Event{ID: "e", Source: "src", Type: "t", Subject: "sub", Hops: 2,
		Time: time.Date(2026, 5, 1, 10, 0, 0, 500_000_000, time.UTC),
		Data: json.RawMessage(`{"n": 3, "list": ["a", "b"], "nested": {"deep": true}, "big": 12345678901234}`)}
	res := b.engine.Test(context.Background(), "s", ev)
	require.Len(t, res, 1)
	require.Empty(t, res[0].Error)
	require.True(t, res[0].Matched)
	out := res[0].Actions[0].Output
	require.Equal(t, "T.a.b", out.RoutingKey)
	var ce map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(out.Body, &ce))
	require.JSONEq(t, `{"n": 3, "list": ["a", "b"], "nested": {"deep": true}, "big": 12345678901234}`, string(ce["data"]))
}

func TestHTTPAction(t *testing.T) {
	t.Parallel()
	type hit struct {
		method, path, key, ctype, xsrc string
		body                           string
	}
	var mu sync.Mutex
	var hits []hit
	// /flaky fails twice with 500 and 429, then succeeds; /bad answers 400;
	// /down always 503.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		hits = append(hits, hit{r.Method, r.URL.Path, r.Header.Get("Idempotency-Key"), r.Header.Get("Content-Type"), r.Header.Get("X-Source"), string(body)})
		n := 0
		for _, h := range hits {
			if h.path == r.URL.Path {
				n++
			}
		}
		mu.Unlock()
		switch {
		case r.URL.Path == "/flaky" && n == 1:
			w.WriteHeader(http.StatusInternalServerError)
		case r.URL.Path == "/flaky" && n == 2:
			w.WriteHeader(http.StatusTooManyRequests)
		case r.URL.Path == "/bad":
			http.Error(w, "no such thing", http.StatusBadRequest)
		case r.URL.Path == "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer srv.Close()

	b := setup(t, `
sources:
  s: {hook: {}}
rules:
  - name: call
    description: Calls the receiver at the event's path.
    source: s
    when: "true"
    actions:
      - http:
          method: PUT
          url: '"`+srv.URL+`/" + event.data.path'
          headers: {X-Source: '"switchboard"'}
          body: '{"id": event.id}'
          retries: 2
`)
	hitsOf := func(path string) []hit {
		mu.Lock()
		defer mu.Unlock()
		var out []hit
		for _, h := range hits {
			if h.path == path {
				out = append(out, h)
			}
		}
		return out
	}
	ctx := context.Background()

	require.NoError(t, b.engine.Handle(ctx, "s", rules.Event{ID: "e1", Source: "s", Data: json.RawMessage(`{"path": "flaky"}`)}))
	got := hitsOf("/flaky")
	require.Len(t, got, 3, "500 and 429 are retried")
	id := rules.OutputID("s", "e1", "call", 0).String()
	for _, h := range got {
		require.Equal(t, hit{"PUT", "/flaky", id, "application/json", "switchboard", `{"id":"e1"}`}, h, "every attempt is the same request")
	}
	f := b.fir.all()
	require.Equal(t, rules.OutcomeMatched, f[0].Outcome)
	require.Equal(t, 3, f[0].Actions[0].Attempts)

	require.NoError(t, b.engine.Handle(ctx, "s", rules.Event{ID: "e2", Source: "s", Data: json.RawMessage(`{"path": "bad"}`)}))
	require.Len(t, hitsOf("/bad"), 1, "400 fails at once")
	f = b.fir.all()
	require.Equal(t, rules.OutcomeFailed, f[1].Outcome)
	require.Equal(t, "PUT "+srv.URL+"/bad: status 400: no such thing", f[1].Actions[0].Error)
	require.Equal(t, 1, f[1].Actions[0].Attempts)

	require.NoError(t, b.engine.Handle(ctx, "s", rules.Event{ID: "e3", Source: "s", Data: json.RawMessage(`{"path": "down"}`)}))
	require.Len(t, hitsOf("/down"), 3, "one attempt and the rule's two retries")
	require.Equal(t, rules.OutcomeFailed, b.fir.all()[2].Outcome)
	require.Len(t, b.dl.all(), 2)

	// A connection error is retried too.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	set, _, err := loadOne(t, `
sources:
  s: {hook: {}}
rules:
  - {name: r, description: d, source: s, when: "true", actions: [{http: {url: '"`+deadURL+`/x"', retries: 1}}]}
`)
	require.NoError(t, err)
	b.engine.Swap(set)
	require.NoError(t, b.engine.Handle(ctx, "s", rules.Event{ID: "e4", Source: "s"}))
	last := b.fir.all()[3]
	require.Equal(t, rules.OutcomeFailed, last.Outcome)
	require.Equal(t, 2, last.Actions[0].Attempts)
	require.Contains(t, last.Actions[0].Error, "connection refused")
}

// Without an allow-list entry the SSRF guard refuses loopback.
func TestHTTPActionGuard(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	set, _, err := loadOne(t, `
sources:
  s: {hook: {}}
rules:
  - {name: r, description: d, source: s, when: "true", actions: [{http: {url: '"`+srv.URL+`"', retries: 0}}]}
`)
	require.NoError(t, err)
	fir := &fakeFirings{}
	e := rules.NewEngine(rules.EngineConfig{}, rules.Deps{
		HTTP:    webhook.NewClient(webhook.NewGuard(webhook.Policy{}, nil, nil), time.Second),
		Firings: fir, DeadLetters: &fakeDeadLetters{}}, nil)
	e.Swap(set)
	require.NoError(t, e.Handle(context.Background(), "s", rules.Event{ID: "e"}))
	require.Zero(t, hits.Load())
	require.Equal(t, rules.OutcomeFailed, fir.all()[0].Outcome)
}

func TestEngineConfigValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, rules.EngineConfig{}.Validate())
	require.EqualError(t, rules.EngineConfig{MaxHops: -1, RetryBase: time.Minute, RetryMax: time.Second}.Validate(),
		"rules: max hops must not be negative\nrules: the first retry delay must not exceed the longest")
}

// The files the loader names are the ones passed.
func TestLoadNamesFilesAsGiven(t *testing.T) {
	t.Parallel()
	dir := writeRules(t, map[string]string{"x.yaml": "rules: [{name: r}]\n"})
	_, err := rules.LoadFiles(filepath.Join(dir, "x.yaml"))
	require.ErrorContains(t, err, filepath.Join(dir, "x.yaml")+`: rule "r": description: is required`)
}

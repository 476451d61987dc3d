// Package rules is switchboard's rules engine: rule files that say, as
// data, "receiving X means doing Y". Each rule watches one source (an AMQP
// exchange, inbound webhooks, a directory, UDP datagrams), matches its
// events with a CEL condition, and responds through actions: publish an
// event, submit a request through switchboard's own request path, or call
// an HTTP endpoint.
//
// Every output is derived from the input event's source and id (OutputID),
// so a redelivered event repeats the same outputs, which consumers dedupe.
// A source acknowledges an event only once the Engine has run or recorded
// as failed every matching rule's actions; failures are kept as dead
// letters, and events that have passed through too many rules (their hop
// count) are dead-lettered, which cuts loops.
package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-gw/switchboard/correlation"
)

// Outcomes of a firing.
const (
	// OutcomeMatched: the condition held and every action succeeded.
	OutcomeMatched = "matched"
	// OutcomeFailed: the condition held and an action failed after its
	// retries (each failed action has a dead letter).
	OutcomeFailed = "failed"
	// OutcomeConditionError: the condition could not be evaluated.
	OutcomeConditionError = "condition_error"
	// OutcomeHopLimit: the event had passed the hop limit; nothing ran.
	OutcomeHopLimit = "hop_limit"
)

// Outcomes of an action.
const (
	ActionOK     = "ok"
	ActionFailed = "failed"
)

// Dead-letter reasons.
const (
	ReasonActionFailed   = "rule_action_failed"
	ReasonConditionError = "rule_condition_error"
	ReasonHopLimit       = "hop_limit"
)

// deadLetterSource is the source of the dead letters the engine keeps.
const deadLetterSource = "rules"

// Firing is the record of one rule meeting one event: its condition held
// (or could not be evaluated), and what its actions did.
type Firing struct {
	ID        int64           `json:"id"`
	Rule      string          `json:"rule"`
	Source    string          `json:"source"`
	EventID   string          `json:"event_id"`
	EventType string          `json:"event_type"`
	Event     json.RawMessage `json:"event"`
	Outcome   string          `json:"outcome"`
	Error     string          `json:"error,omitempty"`
	Actions   []ActionResult  `json:"actions"`
	At        time.Time       `json:"at"`
}

// ActionResult is what one action of a firing did.
type ActionResult struct {
	Kind     string `json:"kind"`
	OutputID string `json:"output_id"`
	Outcome  string `json:"outcome"` // ok or failed
	Error    string `json:"error,omitempty"`
	// Attempts is how often the action was tried (0: its output could not
	// be rendered).
	Attempts int `json:"attempts"`
}

// FiringStore keeps firings (PGFirings in Postgres).
type FiringStore interface {
	Record(ctx context.Context, f Firing) error
}

// DeadLetterStore keeps what could not be done (*correlation.Store has it).
type DeadLetterStore interface {
	KeepDeadLetter(ctx context.Context, reason string, in correlation.IncomingReply) error
}

// Deps are what the engine acts through and records to. An action whose
// dependency is nil fails.
type Deps struct {
	Publisher   Publisher
	Submitter   Submitter
	HTTP        *http.Client
	Firings     FiringStore
	DeadLetters DeadLetterStore
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	// MaxHops is the most hops an event may have and still be acted on
	// (default 8).
	MaxHops int
	// Retries is how often a failed action is retried when its rule sets
	// no retries (default 3; negative: never).
	Retries int
	// RetryBase is the delay before the first retry; each further retry
	// waits twice as long, up to RetryMax (defaults 1s and 1m).
	RetryBase time.Duration
	RetryMax  time.Duration
}

// Default engine settings.
const (
	DefaultMaxHops   = 8
	DefaultRetries   = 3
	DefaultRetryBase = time.Second
	DefaultRetryMax  = time.Minute
)

// withDefaults fills in unset fields.
func (c EngineConfig) withDefaults() EngineConfig {
	if c.MaxHops == 0 {
		c.MaxHops = DefaultMaxHops
	}
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries < 0:
		c.Retries = 0
	}
	if c.RetryBase == 0 {
		c.RetryBase = DefaultRetryBase
	}
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	return c
}

// Validate reports settings that cannot work.
func (c EngineConfig) Validate() error {
	var errs []error
	if c.MaxHops < 0 {
		errs = append(errs, errors.New("rules: max hops must not be negative"))
	}
	if c.RetryBase < 0 || c.RetryMax < 0 {
		errs = append(errs, errors.New("rules: retry delays must not be negative"))
	}
	if c.RetryMax > 0 && c.RetryBase > c.RetryMax {
		errs = append(errs, errors.New("rules: the first retry delay must not exceed the longest"))
	}
	return errors.Join(errs...)
}

// Engine runs a rule set over the events of its sources.
type Engine struct {
	cfg    EngineConfig
	deps   Deps
	logger *slog.Logger
	set    atomic.Pointer[Set]

	mu     sync.Mutex
	counts map[string]*counters // by rule name; they outlive reloads
}

// counters are one rule's counts since the engine started.
type counters struct {
	matches, actionsOK, failures atomic.Int64
}

// NewEngine returns an engine with an empty rule set; Swap gives it rules.
func NewEngine(cfg EngineConfig, deps Deps, logger *slog.Logger) *Engine {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{cfg: cfg.withDefaults(), deps: deps, logger: logger, counts: map[string]*counters{}}
	e.set.Store(&Set{Sources: map[string]SourceConfig{}})
	return e
}

// Swap replaces the rule set. Events being handled finish with the set
// they started with.
func (e *Engine) Swap(set *Set) {
	if set == nil {
		set = &Set{Sources: map[string]SourceConfig{}}
	}
	e.set.Store(set)
}

// Set returns the current rule set.
func (e *Engine) Set() *Set { return e.set.Load() }

// Handler returns the Handler for the events of the named source.
func (e *Engine) Handler(source string) Handler {
	return func(ctx context.Context, ev Event) error { return e.Handle(ctx, source, ev) }
}

func (e *Engine) counters(rule string) *counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.counts[rule]
	if c == nil {
		c = &counters{}
		e.counts[rule] = c
	}
	return c
}

// RuleStatus is a loaded rule and what it has done since the engine
// started.
type RuleStatus struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Source      string   `json:"source"`
	File        string   `json:"file"`
	When        string   `json:"when"`
	Actions     []string `json:"actions"`
	// Matches counts events whose condition held.
	Matches int64 `json:"matches"`
	// ActionsOK counts actions that succeeded.
	ActionsOK int64 `json:"actions_ok"`
	// Failures counts failed actions, condition errors and events past the
	// hop limit.
	Failures int64 `json:"failures"`
}

// Rules returns the current rules with their counts, in load order.
func (e *Engine) Rules() []RuleStatus {
	set := e.set.Load()
	out := make([]RuleStatus, 0, len(set.Rules))
	for _, r := range set.Rules {
		c := e.counters(r.Name)
		out = append(out, RuleStatus{
			Name: r.Name, Description: r.Description, Source: r.Source, File: r.File,
			When: r.When, Actions: r.ActionKinds(),
			Matches: c.matches.Load(), ActionsOK: c.actionsOK.Load(), Failures: c.failures.Load(),
		})
	}
	return out
}

// rulesOf returns the rules of set that watch source ("": all).
func rulesOf(set *Set, source string) []*Rule {
	var out []*Rule
	for _, r := range set.Rules {
		if source == "" || r.Source == source {
			out = append(out, r)
		}
	}
	return out
}

// Handle runs the rules that watch source over ev (the Handler contract):
// each condition is evaluated; each rule whose condition holds runs its
// actions in order, every action with its retries, and a failed action
// does not stop the ones after it. Every matching or erring rule leaves a
// firing, and every failure a dead letter. An event past the hop limit is
// dead-lettered and not acted on.
//
// Handle returns an error only when nothing may be taken as decided: a
// firing or dead letter could not be recorded, or ctx ended. The source
// then offers the event again; the actions that had already run are
// repeated with the same output ids, which downstream consumers dedupe.
func (e *Engine) Handle(ctx context.Context, source string, ev Event) error {
	set := e.set.Load()
	rules := rulesOf(set, source)
	if len(rules) == 0 {
		return nil
	}
	evJSON, err := json.Marshal(ev)
	if err != nil {
		// Only data that is not JSON gets here; keep the event readable.
		bad := ev
		bad.Data = nil
		evJSON, _ = json.Marshal(bad)
	}
	now := time.Now()
	if ev.Hops > e.cfg.MaxHops {
		msg := fmt.Sprintf("the event has %d hops, past the limit of %d", ev.Hops, e.cfg.MaxHops)
		e.logger.Warn("rule event past the hop limit", "source", source, "event_id", ev.ID, "hops", ev.Hops)
		if err := e.deadLetter(ctx, ReasonHopLimit, source, "", "", "", msg, ev, evJSON); err != nil {
			return err
		}
		for _, r := range rules {
			e.counters(r.Name).failures.Add(1)
			if err := e.record(ctx, Firing{Rule: r.Name, Source: source, EventID: ev.ID, EventType: ev.Type,
				Event: evJSON, Outcome: OutcomeHopLimit, Error: msg, At: now}); err != nil {
				return err
			}
		}
		return nil
	}
	vars, varsErr := newActivation(ev)
	for _, r := range rules {
		if err := e.fire(ctx, r, source, ev, evJSON, vars, varsErr); err != nil {
			return err
		}
	}
	return nil
}

// fire runs one rule over one event.
func (e *Engine) fire(ctx context.Context, r *Rule, source string, ev Event, evJSON []byte, vars activation, varsErr error) error {
	c := e.counters(r.Name)
	f := Firing{Rule: r.Name, Source: source, EventID: ev.ID, EventType: ev.Type, Event: evJSON, At: time.Now()}
	matched, err := false, varsErr
	if err == nil {
		matched, err = r.when.evalBool(ctx, vars)
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("rule %s: %w", r.Name, ctx.Err())
		}
		c.failures.Add(1)
		f.Outcome, f.Error = OutcomeConditionError, "when: "+err.Error()
		e.logger.Warn("rule condition error", "rule", r.Name, "source", source, "event_id", ev.ID, "error", err)
		if err := e.deadLetter(ctx, ReasonConditionError, source, r.Name, "", "", f.Error, ev, evJSON); err != nil {
			return err
		}
		return e.record(ctx, f)
	}
	if !matched {
		return nil
	}
	c.matches.Add(1)
	f.Outcome = OutcomeMatched
	in := PlanInput{Event: ev, Rule: r.Name, Now: time.Now(), vars: vars}
	for i, act := range r.Actions {
		in.Index = i
		res := e.run(ctx, act, in)
		if res.Outcome == ActionOK {
			c.actionsOK.Add(1)
			f.Actions = append(f.Actions, res)
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("rule %s: %w", r.Name, ctx.Err())
		}
		c.failures.Add(1)
		f.Actions = append(f.Actions, res)
		if f.Outcome != OutcomeFailed {
			f.Outcome, f.Error = OutcomeFailed, fmt.Sprintf("actions[%d].%s: %s", i, res.Kind, res.Error)
		}
		e.logger.Error("rule action failed", "rule", r.Name, "action", res.Kind, "index", i,
			"event_id", ev.ID, "output_id", res.OutputID, "attempts", res.Attempts, "error", res.Error)
		action := "actions[" + strconv.Itoa(i) + "]." + res.Kind
		if err := e.deadLetter(ctx, ReasonActionFailed, source, r.Name, action, res.OutputID, res.Error, ev, evJSON); err != nil {
			return err
		}
	}
	return e.record(ctx, f)
}

// run plans and does one action, retrying with exponential backoff.
func (e *Engine) run(ctx context.Context, act Action, in PlanInput) ActionResult {
	res := ActionResult{Kind: act.Kind(), OutputID: OutputID(in.Event.Source, in.Event.ID, in.Rule, in.Index).String()}
	out, err := act.Plan(ctx, in)
	if err != nil {
		res.Outcome, res.Error = ActionFailed, err.Error()
		return res
	}
	retries := act.Retries()
	if retries < 0 {
		retries = e.cfg.Retries
	}
	delay := e.cfg.RetryBase
	for {
		res.Attempts++
		err := act.Do(ctx, e.deps, out)
		if err == nil {
			res.Outcome, res.Error = ActionOK, ""
			return res
		}
		res.Outcome, res.Error = ActionFailed, err.Error()
		if IsPermanent(err) || res.Attempts > retries || ctx.Err() != nil {
			return res
		}
		e.logger.Warn("rule action failed; retrying", "rule", in.Rule, "action", res.Kind, "index", in.Index,
			"event_id", in.Event.ID, "attempt", res.Attempts, "retry_in", delay, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return res
		case <-t.C:
		}
		delay = min(2*delay, e.cfg.RetryMax)
	}
}

// record keeps a firing.
func (e *Engine) record(ctx context.Context, f Firing) error {
	if e.deps.Firings == nil {
		return nil
	}
	if err := e.deps.Firings.Record(ctx, f); err != nil {
		return fmt.Errorf("record firing of rule %s: %w", f.Rule, err)
	}
	return nil
}

// deadLetter keeps the event with what went wrong. outputID is the failed
// action's output id, if any.
func (e *Engine) deadLetter(ctx context.Context, reason, source, rule, action, outputID, msg string, ev Event, evJSON []byte) error {
	if e.deps.DeadLetters == nil {
		return nil
	}
	err := e.deps.DeadLetters.KeepDeadLetter(ctx, reason, correlation.IncomingReply{
		Source:        deadLetterSource,
		MessageID:     ev.ID,
		CorrelationID: outputID,
		Time:          time.Now().UnixMilli(),
		Headers:       map[string]any{"rule": rule, "action": action, "error": msg, "source": source},
		Body:          evJSON,
	})
	if err != nil {
		return fmt.Errorf("keep dead letter (%s): %w", reason, err)
	}
	return nil
}

// TestResult is what one rule would do with an event (the dry run).
type TestResult struct {
	Rule    string `json:"rule"`
	Source  string `json:"source"`
	Matched bool   `json:"matched"`
	// Error is why the condition could not be evaluated, or that the event
	// is past the hop limit.
	Error   string       `json:"error,omitempty"`
	Actions []TestAction `json:"actions,omitempty"`
}

// TestAction is what one action would send.
type TestAction struct {
	Kind   string  `json:"kind"`
	Output *Output `json:"output,omitempty"`
	// Error is why the output could not be rendered.
	Error string `json:"error,omitempty"`
}

// Test is the dry run: for each rule of source (every rule when source is
// ""), whether ev matches and what each action would send. Nothing is
// published, requested, sent or recorded.
func (e *Engine) Test(ctx context.Context, source string, ev Event) []TestResult {
	set := e.set.Load()
	rules := rulesOf(set, source)
	out := make([]TestResult, 0, len(rules))
	vars, varsErr := newActivation(ev)
	now := time.Now()
	for _, r := range rules {
		tr := TestResult{Rule: r.Name, Source: r.Source}
		if ev.Hops > e.cfg.MaxHops {
			tr.Error = fmt.Sprintf("the event has %d hops, past the limit of %d: it would be dead-lettered", ev.Hops, e.cfg.MaxHops)
			out = append(out, tr)
			continue
		}
		matched, err := false, varsErr
		if err == nil {
			matched, err = r.when.evalBool(ctx, vars)
		}
		if err != nil {
			tr.Error = "when: " + err.Error()
			out = append(out, tr)
			continue
		}
		tr.Matched = matched
		if matched {
			in := PlanInput{Event: ev, Rule: r.Name, Now: now, vars: vars}
			for i, act := range r.Actions {
				in.Index = i
				ta := TestAction{Kind: act.Kind()}
				if o, err := act.Plan(ctx, in); err != nil {
					ta.Error = err.Error()
				} else {
					ta.Output = &o
				}
				tr.Actions = append(tr.Actions, ta)
			}
		}
		out = append(out, tr)
	}
	return out
}

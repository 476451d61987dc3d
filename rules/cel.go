package rules

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/ext"
)

// Limits on evaluating an expression. The cost limit bounds the work one
// evaluation may do (a comprehension over a large list counts each step);
// the timeout bounds its wall-clock time, checked between comprehension
// steps, so a rule can slow an event down but never hang it.
const (
	costLimit          = 100_000
	evalTimeout        = time.Second
	interruptFrequency = 100
)

// celEnv is the one environment every expression is compiled in: a single
// variable, event, holding the event as JSON, the standard library and
// macros (has, exists, all, map, filter ...), and the string extensions
// (split, lowerAscii, replace ...), which routing keys and URLs need.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)),
		ext.Strings(),
	)
})

// expr is a compiled expression with the type its result must have.
type expr struct {
	text string
	prg  cel.Program
	want resultKind
}

// resultKind is what an expression must evaluate to.
type resultKind int

const (
	resultBool resultKind = iota
	resultString
	resultJSON
)

func (k resultKind) String() string {
	switch k {
	case resultBool:
		return "bool"
	case resultString:
		return "string"
	default:
		return "JSON value"
	}
}

// compile parses and checks text. The error is the checker's issues, one
// line each, without the source snippets.
func compile(text string, want resultKind) (*expr, error) {
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("is empty")
	}
	checked, iss := env.Compile(text)
	if iss != nil && iss.Err() != nil {
		return nil, issuesError(iss)
	}
	out := checked.OutputType()
	if out != types.DynType && out.Kind() != types.DynKind {
		switch want {
		case resultBool:
			if !out.IsExactType(types.BoolType) {
				return nil, fmt.Errorf("must evaluate to a bool, not %s", out)
			}
		case resultString:
			if !out.IsExactType(types.StringType) {
				return nil, fmt.Errorf("must evaluate to a string, not %s", out)
			}
		}
	}
	prg, err := env.Program(checked,
		cel.CostLimit(costLimit),
		cel.InterruptCheckFrequency(interruptFrequency),
	)
	if err != nil {
		return nil, fmt.Errorf("program: %w", err)
	}
	return &expr{text: text, prg: prg, want: want}, nil
}

// issuesError renders CEL issues as "ERROR: <input>:1:12: message", one
// per issue, joined with "; ".
func issuesError(iss *cel.Issues) error {
	var parts []string
	for _, e := range iss.Errors() {
		msg := strings.TrimSuffix(e.Message, " (in container '')")
		parts = append(parts, fmt.Sprintf("ERROR: <input>:%d:%d: %s", e.Location.Line(), e.Location.Column()+1, msg))
	}
	if len(parts) == 0 {
		return iss.Err()
	}
	return errors.New(strings.Join(parts, "; "))
}

// activation is an event as expressions see it: the event as JSON, with
// time as an RFC 3339 string and data decoded (null when absent).
type activation map[string]any

// newActivation builds the variables of one evaluation. It fails when the
// event's data is not JSON.
func newActivation(ev Event) (activation, error) {
	var data any
	if len(ev.Data) > 0 {
		if err := json.Unmarshal(ev.Data, &data); err != nil {
			return nil, fmt.Errorf("event data is not JSON: %w", err)
		}
	}
	t := ""
	if !ev.Time.IsZero() {
		t = ev.Time.UTC().Format(time.RFC3339Nano)
	}
	return activation{"event": map[string]any{
		"id":              ev.ID,
		"source":          ev.Source,
		"type":            ev.Type,
		"time":            t,
		"subject":         ev.Subject,
		"data":            data,
		"switchboardhops": int64(ev.Hops),
	}}, nil
}

// eval evaluates e over vars within the cost limit and the timeout. A
// run-time error (a missing field, the cost limit, the timeout) is returned.
func (e *expr) eval(ctx context.Context, vars activation) (ref.Val, error) {
	ctx, cancel := context.WithTimeout(ctx, evalTimeout)
	defer cancel()
	out, _, err := e.prg.ContextEval(ctx, map[string]any(vars))
	if err != nil {
		return nil, err
	}
	if types.IsUnknownOrError(out) {
		return nil, fmt.Errorf("%v", out)
	}
	return out, nil
}

// evalBool evaluates a condition.
func (e *expr) evalBool(ctx context.Context, vars activation) (bool, error) {
	out, err := e.eval(ctx, vars)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("evaluated to %s, not bool", out.Type().TypeName())
	}
	return bool(b), nil
}

// evalString evaluates a string expression.
func (e *expr) evalString(ctx context.Context, vars activation) (string, error) {
	out, err := e.eval(ctx, vars)
	if err != nil {
		return "", err
	}
	s, ok := out.(types.String)
	if !ok {
		return "", fmt.Errorf("evaluated to %s, not string", out.Type().TypeName())
	}
	return string(s), nil
}

// evalJSON evaluates an expression and encodes its result as JSON. Map
// keys come out sorted, so the same event always gives the same bytes.
func (e *expr) evalJSON(ctx context.Context, vars activation) (json.RawMessage, error) {
	out, err := e.eval(ctx, vars)
	if err != nil {
		return nil, err
	}
	v, err := toJSON(out)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return b, nil
}

// maxJSONDepth bounds the nesting of a converted value.
const maxJSONDepth = 100

// toJSON converts a CEL value to what encoding/json encodes as the same
// JSON: maps with string keys, lists, strings, numbers, bools and nil.
// Bytes become base64, timestamps RFC 3339 strings, durations Go duration
// strings; anything else is an error.
func toJSON(v ref.Val) (any, error) { return toJSONDepth(v, 0) }

func toJSONDepth(v ref.Val, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errors.New("result nests too deeply")
	}
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		return uint64(x), nil
	case types.Double:
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("result has %v, which JSON cannot hold", f)
		}
		return f, nil
	case types.String:
		return string(x), nil
	case types.Bytes:
		return base64.StdEncoding.EncodeToString(x), nil
	case types.Timestamp:
		return x.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return x.Duration.String(), nil
	}
	switch x := v.(type) {
	case traits.Mapper:
		out := map[string]any{}
		for it := x.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			ks, ok := k.(types.String)
			if !ok {
				return nil, fmt.Errorf("result has a map key of type %s; JSON keys are strings", k.Type().TypeName())
			}
			val, err := toJSONDepth(x.Get(k), depth+1)
			if err != nil {
				return nil, err
			}
			out[string(ks)] = val
		}
		return out, nil
	case traits.Lister:
		out := []any{}
		for it := x.Iterator(); it.HasNext() == types.True; {
			val, err := toJSONDepth(it.Next(), depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, val)
		}
		return out, nil
	}
	if types.IsError(v) {
		return nil, fmt.Errorf("%v", v)
	}
	return nil, fmt.Errorf("result has a value of type %s, which is not JSON", v.Type().TypeName())
}

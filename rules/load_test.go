package rules_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/rules"
)

// writeRules writes name → content into a fresh directory and returns the
// directory.
func writeRules(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	return dir
}

// loadOne loads content as one rule file named f.yaml and returns the set,
// the file's path and the error.
func loadOne(t *testing.T, content string) (*rules.Set, string, error) {
	t.Helper()
	dir := writeRules(t, map[string]string{"f.yaml": content})
	path := filepath.Join(dir, "f.yaml")
	set, err := rules.LoadFiles(path)
	return set, path, err
}

// fullExample is the documented rule format, every source and action kind.
const fullExample = `
sources:
  workspace:
    amqp: {exchange: switchboard.events, bindings: ["workspace.#"]}
  archive:
    hook: {}
  incoming:
    directory: {path: /var/lib/switchboard/incoming, pattern: "*"}
  legacy:
    udp: {address: "127.0.0.1:9999"}
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
      - request:
          routing_key: capability.standard-calibration
          body: '{"ingestion": event.data}'
          timeout: 1h
      - http:
          method: post
          url: '"https://ops.example.com/hooks/" + event.data.id'
          headers: {X-Source: '"switchboard"'}
          body: '{"id": event.data.id}'
          retries: 3
`

func TestLoadFullExample(t *testing.T) {
	t.Parallel()
	set, path, err := loadOne(t, fullExample)
	require.NoError(t, err)
	require.Equal(t, []string{path}, set.Files)

	require.Len(t, set.Sources, 4)
	require.Equal(t, rules.SourceConfig{Name: "workspace", File: path,
		AMQP: &rules.AMQPSource{Exchange: "switchboard.events", Bindings: []string{"workspace.#"}}}, set.Sources["workspace"])
	require.Equal(t, rules.SourceConfig{Name: "archive", File: path, Hook: &rules.HookSource{}}, set.Sources["archive"])
	require.Equal(t, rules.SourceConfig{Name: "incoming", File: path,
		Directory: &rules.DirectorySource{Path: "/var/lib/switchboard/incoming", Pattern: "*"}}, set.Sources["incoming"])
	require.Equal(t, rules.SourceConfig{Name: "legacy", File: path, UDP: &rules.UDPSource{Address: "127.0.0.1:9999"}}, set.Sources["legacy"])
	require.Equal(t, "udp", set.Sources["legacy"].Kind())

	require.Len(t, set.Rules, 1)
	r := set.Rules[0]
	require.Equal(t, "capability-status", r.Name)
	require.Equal(t, "workspace", r.Source)
	require.Equal(t, path, r.File)
	require.Equal(t, `event.type == "workflow-status" && has(event.data.capability_id)`, r.When)
	require.Equal(t, []string{"publish", "request", "http"}, r.ActionKinds())

	pub := r.Actions[0].(*rules.PublishAction)
	require.Equal(t, "switchboard.events", pub.Exchange)
	require.Equal(t, "capability-status", pub.Type)
	require.Equal(t, -1, pub.Retries(), "no retries set: the engine's default")
	req := r.Actions[1].(*rules.RequestAction)
	require.Equal(t, "capability.standard-calibration", req.RoutingKey)
	require.Equal(t, time.Hour, req.Timeout)
	h := r.Actions[2].(*rules.HTTPAction)
	require.Equal(t, "POST", h.Method, "the method is upper-cased")
	require.Equal(t, 3, h.Retries())
	require.Equal(t, map[string]string{"X-Source": `"switchboard"`}, h.Headers)
	require.Same(t, r, set.Rule("capability-status"))
	require.Nil(t, set.Rule("nope"))
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	set, _, err := loadOne(t, `
sources:
  inbox: {directory: {path: /tmp/in}}
  hooked: {hook: }
rules:
  - name: always
    description: d
    source: inbox
    when: true
    actions:
      - http: {url: '"http://127.0.0.1/x"'}
`)
	require.NoError(t, err)
	require.Equal(t, "*", set.Sources["inbox"].Directory.Pattern)
	require.NotNil(t, set.Sources["hooked"].Hook, "a bare hook: is a hook")
	require.Equal(t, "true", set.Rules[0].When)
	require.Equal(t, "POST", set.Rules[0].Actions[0].(*rules.HTTPAction).Method)
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	// head is a valid preamble; each case adds one rule (or replaces it all).
	const head = `
sources:
  src: {hook: {}}
rules:
`
	tests := []struct {
		name    string
		content string
		want    []string // each line after "<path>: "
	}{
		{
			name: "undeclared reference in when",
			content: head + `
  - name: capability-status
    description: d
    source: src
    when: event.type == evnt
    actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]
`,
			want: []string{`rule "capability-status": when: ERROR: <input>:1:15: undeclared reference to 'evnt'`},
		},
		{
			name: "when must be bool",
			content: head + `
  - name: r
    description: d
    source: src
    when: '"yes"'
    actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]
`,
			want: []string{`rule "r": when: must evaluate to a bool, not string`},
		},
		{
			name: "syntax error",
			content: head + `
  - name: r
    description: d
    source: src
    when: event.type ==
    actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]
`,
			want: []string{`rule "r": when: ERROR: <input>:1:14: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}`},
		},
		{
			name: "bad request routing key and timeout",
			content: head + `
  - name: r
    description: d
    source: src
    when: "true"
    actions:
      - publish: {exchange: x, routing_key: '"k"', type: t}
      - request: {routing_key: "a..b", body: 'event.data', timeout: soon}
`,
			want: []string{
				`rule "r": actions[1].request.routing_key: "a..b" is not a routing key`,
				`rule "r": actions[1].request.timeout: "soon" is not a duration such as 30s or 1h`,
			},
		},
		{
			name: "several errors in one rule are all reported",
			content: head + `
  - name: r
    description: d
    source: nowhere
    when: "true"
    extra: 1
    actions:
      - publish: {exchange: x, routing_key: '1', type: t, colour: red}
      - http: {method: TRACE, url: '"http://h/"', headers: {Idempotency-Key: '"x"', "bad header": '"y"'}, retries: 99}
      - request: {routing_key: k}
      - mail: {to: x}
      - {publish: {exchange: x, routing_key: '"k"', type: t}, request: {routing_key: k, body: '1'}}
`,
			want: []string{
				`rule "r": unknown field "extra"`,
				`rule "r": actions[0].publish: unknown field "colour"`,
				`rule "r": actions[0].publish.routing_key: must evaluate to a string, not int`,
				`rule "r": actions[1].http.method: "TRACE" is not one of GET, POST, PUT, PATCH, DELETE`,
				`rule "r": actions[1].http.headers.Idempotency-Key: is set by the action itself`,
				`rule "r": actions[1].http.headers.bad header: "bad header" is not a header name`,
				`rule "r": actions[1].http.retries: must be a whole number from 0 to 10`,
				`rule "r": actions[2].request.body: is required`,
				`rule "r": actions[3]: unknown field "mail"`,
				`rule "r": actions[3]: must have exactly one of publish, request and http`,
				`rule "r": actions[4]: must have exactly one of publish, request and http`,
				`rule "r": source: no source "nowhere" is defined`,
			},
		},
		{
			name: "missing fields and a bad name",
			content: head + `
  - name: Capability Status
  - when: "true"
    name: ok-name
`,
			want: []string{
				`rules[0]: name: "Capability Status" must be 1 to 64 characters of a-z, 0-9 and -`,
				`rules[0]: description: is required`,
				`rules[0]: source: is required`,
				`rules[0]: when: is required`,
				`rules[0]: actions: at least one action is required`,
				`rule "ok-name": description: is required`,
				`rule "ok-name": source: is required`,
				`rule "ok-name": actions: at least one action is required`,
			},
		},
		{
			name: "duplicate rule name",
			content: head + `
  - {name: r, description: d, source: src, when: "true", actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]}
  - {name: r, description: d, source: src, when: "true", actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]}
`,
			want: []string{`rule "r": name: is already used by a rule in <path>`},
		},
		{
			name: "sources",
			content: `
sources:
  a: {amqp: {exchange: x}}
  b: {amqp: {exchange: x, bindings: []}}
  c: {hook: {}, udp: {address: "127.0.0.1:1"}}
  d: {udp: {address: "localhost"}}
  e: {udp: {address: "127.0.0.1:70000"}}
  f: {directory: {pattern: "[", path: /x}}
  g: {kafka: {}}
  Bad_Name: {hook: {}}
  h: {hook: {x: 1}}
`,
			want: []string{
				`source "a": amqp.bindings: is required`,
				`source "b": amqp.bindings: at least one binding is required`,
				`source "c": must have exactly one of amqp, hook, directory and udp`,
				`source "d": udp.address: "localhost" is not host:port`,
				`source "e": udp.address: "127.0.0.1:70000" has no port between 1 and 65535`,
				`source "f": directory.pattern: "[" is not a file name pattern: syntax error in pattern`,
				`source "g": unknown field "kafka"`,
				`source "g": must have exactly one of amqp, hook, directory and udp`,
				`source "Bad_Name": the name must be 1 to 64 characters of a-z, 0-9 and -`,
				`source "h": hook: unknown field "x"`,
			},
		},
		{
			name:    "not a mapping",
			content: "- just a list\n",
			want:    []string{`must be a mapping with the fields sources, rules`},
		},
		{
			name:    "unknown top-level field",
			content: "rule: []\n",
			want:    []string{`unknown field "rule"`},
		},
		{
			name:    "yaml syntax",
			content: "rules: [\n",
			want:    []string{`yaml: line 1: did not find expected node content`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			set, path, err := loadOne(t, tc.content)
			require.Nil(t, set)
			require.Error(t, err)
			var want []string
			for _, w := range tc.want {
				want = append(want, path+": "+strings.ReplaceAll(w, "<path>", path))
			}
			require.Equal(t, want, strings.Split(err.Error(), "\n"))
		})
	}
}

func TestLoadAcrossFiles(t *testing.T) {
	t.Parallel()
	dir := writeRules(t, map[string]string{
		"1-sources.yaml": "sources:\n  workspace: {amqp: {exchange: ex, bindings: ['#']}}\n",
		"2-rules.yml": `
rules:
  - {name: b, description: d, source: workspace, when: "true", actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]}
`,
		"3-more.yaml": `
rules:
  - {name: a, description: d, source: workspace, when: "true", actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]}
`,
		"empty.yaml": "",
		"notes.txt":  "not a rule file",
	})
	set, err := rules.LoadDir(dir)
	require.NoError(t, err)
	require.Equal(t, []string{
		filepath.Join(dir, "1-sources.yaml"), filepath.Join(dir, "2-rules.yml"),
		filepath.Join(dir, "3-more.yaml"), filepath.Join(dir, "empty.yaml"),
	}, set.Files)
	require.Len(t, set.Rules, 2)
	require.Equal(t, "b", set.Rules[0].Name, "rules keep file order")
	require.Equal(t, filepath.Join(dir, "2-rules.yml"), set.Rules[0].File)

	// Names are unique across files.
	dup := writeRules(t, map[string]string{
		"a.yaml": "sources:\n  s: {hook: {}}\n",
		"b.yaml": "sources:\n  s: {hook: {}}\n",
	})
	_, err = rules.LoadDir(dup)
	require.EqualError(t, err, filepath.Join(dup, "b.yaml")+`: source "s": is already defined in `+filepath.Join(dup, "a.yaml"))

	empty, err := rules.LoadDir(t.TempDir())
	require.NoError(t, err)
	require.Empty(t, empty.Rules)

	_, err = rules.LoadFiles(filepath.Join(dir, "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, filepath.Join(dir, "missing.yaml")+": open ")
}

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRulesCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	sources := write("sources.yaml", `
sources:
  workspace: {amqp: {exchange: switchboard.events, bindings: ["workflow.#"]}}
  archive: {hook: {}}
`)
	good := write("good.yaml", `
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
          data: '{"capability_id": event.data.capability_id}'
`)
	bad := filepath.Join(t.TempDir(), "bad.yml")
	require.NoError(t, os.WriteFile(bad, []byte(`
rules:
  - name: vla-calibration
    description: d
    source: archive
    when: evnt.type == "ingestion-complete"
    actions:
      - request: {routing_key: "a..b", body: 'event.data'}
`), 0o644))

	check := func(args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append([]string{"rules", "check"}, args...), func(string) string { return "" }, &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}

	out, errOut, err := check(sources, good)
	require.NoError(t, err)
	require.Equal(t, "ok: 1 rule, 2 sources in 2 files\n", out)
	require.Empty(t, errOut)

	// A directory stands for its rule files.
	out, _, err = check(dir)
	require.NoError(t, err)
	require.Equal(t, "ok: 1 rule, 2 sources in 2 files\n", out)

	// Every problem is printed, and the status is non-zero.
	out, errOut, err = check(sources, good, bad)
	require.EqualError(t, err, "2 problems in the rule files")
	require.Empty(t, out)
	require.Equal(t, bad+`: rule "vla-calibration": when: ERROR: <input>:1:1: undeclared reference to 'evnt'`+"\n"+
		bad+`: rule "vla-calibration": actions[0].request.routing_key: "a..b" is not a routing key`+"\n", errOut)

	// Alone, the good rule's source is missing.
	_, errOut, err = check(good)
	require.EqualError(t, err, "1 problem in the rule files")
	require.Equal(t, good+`: rule "capability-status": source: no source "workspace" is defined`+"\n", errOut)

	_, errOut, err = check()
	require.ErrorIs(t, err, errUsage)
	require.Contains(t, errOut, "switchboard rules check FILE|DIR...")

	_, _, err = check(filepath.Join(dir, "missing.yaml"))
	require.EqualError(t, err, "1 problem in the rule files")

	_, errOut, err = check(t.TempDir())
	require.EqualError(t, err, "no rule files to check")
	require.Contains(t, errOut, "no *.yaml or *.yml files")

	var stdout, stderr bytes.Buffer
	err = run(context.Background(), []string{"rules", "frobnicate"}, func(string) string { return "" }, &stdout, &stderr)
	require.ErrorIs(t, err, errUsage)
	require.EqualError(t, err, `usage: unknown rules command "frobnicate"`)
}

package rules_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/rules"
)

func TestCollectorExposesRuleCounts(t *testing.T) {
	t.Parallel()
	set, _, err := loadOne(t, `
sources:
  s: {hook: {}}
rules:
  - name: r1
    description: d
    source: s
    when: "true"
    actions: [{publish: {exchange: x, routing_key: '"k"', type: t}}]
`)
	require.NoError(t, err)
	e := rules.NewEngine(rules.EngineConfig{}, rules.Deps{}, nil)
	e.Swap(set)
	c := rules.NewCollector(e, nil)
	require.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP switchboard_rule_matches_total Events whose rule condition held, by rule.
# TYPE switchboard_rule_matches_total counter
switchboard_rule_matches_total{rule="r1"} 0
`), "switchboard_rule_matches_total"))
	require.Equal(t, 3, testutil.CollectAndCount(c))
}

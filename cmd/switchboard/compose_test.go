package main

import (
	"context"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// readsOf returns the environment variables a subcommand reads, by running
// its configuration with a getenv that records every name asked for.
func readsOf(t *testing.T, command string) map[string]bool {
	t.Helper()
	var mu sync.Mutex
	seen := map[string]bool{}
	getenv := func(name string) string {
		mu.Lock()
		defer mu.Unlock()
		seen[name] = true
		return ""
	}
	switch command {
	case "serve":
		// The whole configuration, also what is read after the flags.
		_, err := loadServeConfig(nil, getenv, io.Discard)
		require.NoError(t, err)
	default:
		// -h stops after the flags are defined, before anything starts.
		_ = run(context.Background(), []string{command, "-h"}, getenv, io.Discard, io.Discard)
	}
	require.NotEmpty(t, seen, "%s reads no variables?", command)
	return seen
}

// Every variable docker-compose.yml sets on a switchboard container is one
// that container's command reads: a misspelt or retired option would
// otherwise be ignored without a word.
func TestComposeSetsOnlyRealOptions(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../docker-compose.yml")
	require.NoError(t, err)
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &compose)) // resolves the x-gateway anchor

	checked := map[string]int{}
	for name, svc := range compose.Services {
		if !strings.HasPrefix(svc.Image, "switchboard:") {
			continue
		}
		require.NotEmpty(t, svc.Command, "service %s: name its command", name)
		reads := readsOf(t, svc.Command[0])
		var unknown []string
		for v := range svc.Environment {
			if !reads[v] {
				unknown = append(unknown, v)
			}
		}
		sort.Strings(unknown)
		require.Empty(t, unknown, "service %s (%s) sets variables it does not read", name, svc.Command[0])
		checked[svc.Command[0]]++
	}
	require.Equal(t, map[string]int{"serve": 2, "echo": 1}, checked, "two gateways and the echo responder")
}

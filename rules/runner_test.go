package rules

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memFirings is an in-memory firing store; failing makes Record fail as if
// Postgres were away.
type memFirings struct {
	mu      sync.Mutex
	firings []Firing
	failing bool
}

func (m *memFirings) Record(_ context.Context, f Firing) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing {
		return errors.New("postgres away")
	}
	f.ID = int64(len(m.firings) + 1)
	m.firings = append(m.firings, f)
	return nil
}

func (m *memFirings) Recent(_ context.Context, rule string, limit int) ([]Firing, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Firing
	for i := len(m.firings) - 1; i >= 0 && len(out) < limit; i-- {
		if m.firings[i].Rule == rule {
			out = append(out, m.firings[i])
		}
	}
	return out, nil
}

func (m *memFirings) setFailing(v bool) {
	m.mu.Lock()
	m.failing = v
	m.mu.Unlock()
}

// localBundle is a runner over a temp rule directory with sources that need
// no broker (hook, directory, udp) and an engine that does nothing but
// record firings in memory.
type localBundle struct {
	dir     string
	engine  *Engine
	runner  *Runner
	firings *memFirings
	signals chan os.Signal
}

func writeRules(t *testing.T, dir, name, content string) {
	t.Helper()
	// Written aside and renamed, as editors and config management do, so a
	// reload never reads half a file.
	tmp := filepath.Join(dir, "."+name+".tmp")
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o644))
	require.NoError(t, os.Rename(tmp, filepath.Join(dir, name)))
}

func setupLocal(t *testing.T, files map[string]string) *localBundle {
	t.Helper()
	b := &localBundle{dir: t.TempDir(), firings: &memFirings{}, signals: make(chan os.Signal, 1)}
	for name, content := range files {
		writeRules(t, b.dir, name, content)
	}
	b.engine = NewEngine(EngineConfig{Retries: -1}, Deps{Firings: b.firings}, testLogger(t))
	cfg := DefaultRunnerConfig(b.dir)
	cfg.Debounce = 50 * time.Millisecond
	cfg.Settle = 100 * time.Millisecond
	cfg.RestartMin, cfg.RestartMax = 20*time.Millisecond, 100*time.Millisecond
	cfg.Signals = b.signals
	cfg.Firings = b.firings
	var err error
	b.runner, err = NewRunner(cfg, b.engine, testLogger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.runner.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.Eventually(t, func() bool { return b.runner.Status().Reloads > 0 }, 5*time.Second, 5*time.Millisecond, "never loaded")
	return b
}

// source waits for the running source name.
func (b *localBundle) source(t *testing.T, name string) Source {
	t.Helper()
	var s Source
	require.Eventually(t, func() bool {
		var ok bool
		s, ok = b.runner.Source(name)
		return ok
	}, 5*time.Second, 5*time.Millisecond, "source %s never started", name)
	return s
}

const hookRules = `
sources:
  archive: {hook: {}}
rules:
  - name: vla
    description: VLA ingestions
    source: archive
    when: event.type == "ingestion-complete" && event.data.instrument == "VLA"
    actions:
      - publish: {exchange: x, routing_key: '"calibrate"', type: calibrate, data: 'event.data'}
`

func udpRules(addr string) string {
	return `
sources:
  legacy: {udp: {address: "` + addr + `"}}
rules:
  - name: legacy-any
    description: any datagram
    source: legacy
    when: "true"
    actions:
      - publish: {exchange: x, routing_key: '"legacy"', type: legacy}
`
}

func freeUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := pc.LocalAddr().String()
	require.NoError(t, pc.Close())
	return addr
}

func TestRunnerReload(t *testing.T) {
	t.Parallel()
	b := setupLocal(t, map[string]string{"archive.yaml": hookRules, "legacy.yaml": udpRules(freeUDP(t))})
	require.NotNil(t, b.engine.Set().Rule("vla"))
	hook := b.source(t, "archive")
	udp := b.source(t, "legacy")
	waitReady(t, udp.(*UDPListener).Ready())

	// A good edit of one file: its rule changes, the other file's source
	// keeps running untouched, and an unchanged hook source too.
	writeRules(t, b.dir, "archive.yaml", hookRules+`
  - name: alma
    description: ALMA ingestions
    source: archive
    when: event.data.instrument == "ALMA"
    actions:
      - publish: {exchange: x, routing_key: '"alma"', type: alma}
`)
	require.Eventually(t, func() bool { return b.engine.Set().Rule("alma") != nil }, 5*time.Second, 10*time.Millisecond, "good edit never picked up")
	require.NoError(t, b.runner.LastError())
	same, _ := b.runner.Source("archive")
	require.Same(t, hook, same, "an unchanged source is not restarted")
	same, _ = b.runner.Source("legacy")
	require.Same(t, udp, same, "an unchanged source is not restarted")

	// A bad edit: the last good set keeps running and the error says why.
	writeRules(t, b.dir, "archive.yaml", hookRules+`
  - name: broken
    description: a typo
    source: archive
    when: event.type ==
    actions: []
`)
	require.Eventually(t, func() bool { return b.runner.LastError() != nil }, 5*time.Second, 10*time.Millisecond, "bad edit never reported")
	require.ErrorContains(t, b.runner.LastError(), "archive.yaml")
	require.ErrorContains(t, b.runner.LastError(), `rule "broken"`)
	require.NotNil(t, b.engine.Set().Rule("alma"), "the last good set keeps running")
	require.Nil(t, b.engine.Set().Rule("broken"))
	st := b.runner.Status()
	require.NotEmpty(t, st.LastError)
	require.GreaterOrEqual(t, st.ReloadFailures, int64(1))
	h, ok := b.runner.Hook("archive")
	require.True(t, ok)
	require.NoError(t, h.Deliver(context.Background(), Event{ID: "e1", Source: "s", Type: "ingestion-complete",
		Data: []byte(`{"instrument":"ALMA"}`)}), "events still flow")

	// A change of the UDP source's address restarts just that source; the
	// removal of a file's source stops it. SIGHUP (here: the Signals
	// channel) reloads without waiting for the watcher.
	writeRules(t, b.dir, "archive.yaml", hookRules)
	newAddr := freeUDP(t)
	require.NoError(t, os.WriteFile(filepath.Join(b.dir, "legacy.yaml"), []byte(udpRules(newAddr)), 0o644))
	b.signals <- syscall.SIGHUP
	require.Eventually(t, func() bool {
		s, ok := b.runner.Source("legacy")
		return ok && s != udp && b.runner.LastError() == nil && b.engine.Set().Rule("alma") == nil
	}, 5*time.Second, 10*time.Millisecond)
	udp2 := b.source(t, "legacy").(*UDPListener)
	waitReady(t, udp2.Ready())
	require.Equal(t, newAddr, udp2.Addr().String())
	same, _ = b.runner.Source("archive")
	require.Same(t, hook, same)

	require.NoError(t, os.Remove(filepath.Join(b.dir, "legacy.yaml")))
	require.NoError(t, b.runner.Reload())
	_, ok = b.runner.Source("legacy")
	require.False(t, ok, "a removed source is stopped")
	require.Nil(t, b.engine.Set().Rule("legacy-any"))
}

func TestRunnerFirstLoadFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeRules(t, dir, "bad.yaml", "rules: [{name: x}]")
	r, err := NewRunner(DefaultRunnerConfig(dir), NewEngine(EngineConfig{}, Deps{}, nil), testLogger(t))
	require.NoError(t, err)
	require.ErrorContains(t, r.Run(context.Background()), "bad.yaml")

	_, err = NewRunner(RunnerConfig{}, nil, testLogger(t))
	require.Error(t, err, "the directory is required")
}

// TestRunnerRestartsFailedSource: a directory source whose directory does
// not exist yet is started again with backoff until it does.
func TestRunnerRestartsFailedSource(t *testing.T) {
	t.Parallel()
	watch := filepath.Join(t.TempDir(), "later")
	b := setupLocal(t, map[string]string{"dir.yaml": `
sources:
  incoming: {directory: {path: "` + watch + `"}}
rules:
  - name: any-file
    description: any file
    source: incoming
    when: event.type == "file.finished"
    actions:
      - publish: {exchange: x, routing_key: '"f"', type: f}
`})
	require.Eventually(t, func() bool {
		st := b.runner.Status()
		return len(st.Sources) == 1 && st.Sources[0].Restarts > 0 && st.Sources[0].Error != ""
	}, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, os.Mkdir(watch, 0o755))
	require.Eventually(t, func() bool {
		s, ok := b.runner.Source("incoming")
		if !ok {
			return false
		}
		select {
		case <-s.(*DirWatcher).Ready():
			return true
		default:
			return false
		}
	}, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, os.WriteFile(filepath.Join(watch, "a"), []byte("x"), 0o644))
	require.Eventually(t, func() bool {
		f, _ := b.firings.Recent(context.Background(), "any-file", 10)
		return len(f) == 1
	}, 5*time.Second, 10*time.Millisecond, "the restarted source never delivered")
}

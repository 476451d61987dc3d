package testsvc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildGateway builds this module's cmd/switchboard into dir with the go
// tool that runs the tests (go test puts its GOROOT/bin first in PATH), for
// tests that run the real binary. Call it once, from TestMain.
func BuildGateway(dir string) (bin string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not in a module")
	}
	bin = filepath.Join(dir, "switchboard")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/switchboard")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/switchboard: %w\n%s", err, out)
	}
	return bin, nil
}

// GatewayEnv is the environment of a `switchboard serve` for a test: a free
// loopback port, the test's database and broker names, JSON logs, no
// webhook secret, and none of the SWITCHBOARD_ settings of the shell that
// runs the tests; extra comes last and wins.
func GatewayEnv(dbURL, amqpURL string, n Names, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"SWITCHBOARD_HTTP_ADDR=127.0.0.1:0",
		"SWITCHBOARD_DATABASE_URL="+dbURL,
		"SWITCHBOARD_AMQP_URL="+amqpURL,
		"SWITCHBOARD_REQUEST_EXCHANGE="+n.Exchange,
		"SWITCHBOARD_REPLY_QUEUE="+n.ReplyQueue,
		"SWITCHBOARD_EVENTS_EXCHANGE="+n.EventsExchange,
		"SWITCHBOARD_DEAD_LETTER_EXCHANGE="+n.DeadLetterExchange,
		"SWITCHBOARD_DEAD_LETTER_QUEUE="+n.DeadLetterQueue,
		"SWITCHBOARD_EVENT_HISTORY_QUEUE="+n.EventHistoryQueue,
		"SWITCHBOARD_LOG_FORMAT=json",
		"SWITCHBOARD_WEBHOOK_SECRETS=",
	)
	return append(env, extra...)
}

// LockedBuffer collects a process's output from another goroutine.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// WriteString appends s.
func (b *LockedBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

// String returns what was written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// StartGateway runs `bin serve` with env and returns its address
// (host:port) once it listens and has connected to the broker, and its log
// so far; it fails t when the process exits or ctx ends first. The process
// is stopped (SIGTERM, then kill after 10 s) when t ends, and its log is
// printed if t failed.
func StartGateway(ctx context.Context, t testing.TB, bin string, env []string) (string, *LockedBuffer) {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("gateway stderr: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start switchboard serve: %v", err)
	}
	logs := &LockedBuffer{}
	addrc := make(chan string, 1)
	connected := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			logs.WriteString(line + "\n")
			var entry struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) != nil {
				continue
			}
			switch entry.Msg {
			case "listening":
				select {
				case addrc <- entry.Addr:
				default:
				}
			case "broker connected":
				once.Do(func() { close(connected) })
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", logs.String())
		}
	})
	var addr string
	select {
	case addr = <-addrc:
	case err := <-exited:
		t.Fatalf("switchboard serve exited: %v\n%s", err, logs.String())
	case <-ctx.Done():
		t.Fatalf("switchboard serve did not listen in time:\n%s", logs.String())
	}
	select {
	case <-connected:
	case <-ctx.Done():
		t.Fatalf("switchboard serve did not connect to the broker in time:\n%s", logs.String())
	}
	return addr, logs
}

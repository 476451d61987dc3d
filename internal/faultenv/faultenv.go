// Package faultenv starts throwaway service instances for switchboard's fault
// suite (the faults package, build tag faults): a RabbitMQ node, a Postgres
// cluster and `switchboard serve` / `switchboard echo` processes, each of
// which a test may stop, kill and start again while traffic flows.
//
// Everything here is private to the test that starts it: its own node name,
// data directory and free loopback ports, never the machine's shared services
// on 5432 and 5672, which the fault suite must not disturb. Every instance is
// stopped, and its directory removed, when the test ends (t.Cleanup), whether
// the test passed or not.
//
// The helpers expect a Debian-style installation, as in the project's CI
// image: RabbitMQ under /usr/lib/rabbitmq and Postgres 15 under
// /usr/lib/postgresql/15, run as root (Postgres itself runs as the postgres
// user through runuser). Where that is missing, the test is skipped, or
// failed under CI=true.
package faultenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("faultenv: find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// randomSuffix returns a short random hex string for unique names.
func randomSuffix() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// unavailable skips the test, or fails it under CI=true, where the fault
// suite must run.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("faultenv: %s (required under CI=true)", msg)
	}
	t.Skipf("faultenv: %s", msg)
}

// requireExecutable skips (or fails under CI) when path is not executable.
func requireExecutable(t testing.TB, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil || st.Mode()&0o111 == 0 {
		unavailable(t, "%s is not installed", path)
	}
}

// run runs a short command and returns its combined output; it is killed
// after timeout.
func run(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = env
	}
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s: %w", name, strings.Join(args, " "), timeout, err)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), err
}

// KeepEnv names the environment variable that, set to 1, keeps the data
// and log directories of a failed test's instances for inspection (their
// paths are logged).
const KeepEnv = "FAULTENV_KEEP"

// removeDir removes an instance's directory when t ends, unless t failed
// and KeepEnv is set.
func removeDir(t testing.TB, what, dir string) {
	if t.Failed() && os.Getenv(KeepEnv) == "1" {
		t.Logf("faultenv: kept %s directory %s", what, dir)
		return
	}
	_ = os.RemoveAll(dir)
}

// tail returns at most the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// readTail returns the end of a log file, for failure messages.
func readTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return tail(string(b), n)
}

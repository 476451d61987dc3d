package faultenv

import (
	"bufio"
	"bytes"
	"encoding/json"
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

// SwitchboardPackage is the import path of the switchboard command.
const SwitchboardPackage = "github.com/switchboard-gw/switchboard/cmd/switchboard"

// BuildSwitchboard compiles the switchboard command into dir and returns the
// binary's path. With race set it is built with the race detector, so data
// races in the gateway under faults are reported in its log (see
// Process.Races). It must run inside the module (as `go test` does).
func BuildSwitchboard(dir string, race bool) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goBin = filepath.Join(root, "bin", "go")
		} else {
			return "", fmt.Errorf("no go command on PATH: %w", err)
		}
	}
	out := filepath.Join(dir, "switchboard")
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	if msg, err := run(10*time.Minute, nil, goBin, append(args, SwitchboardPackage)...); err != nil {
		return "", fmt.Errorf("%w\n%s", err, msg)
	}
	return out, nil
}

// Process is a `switchboard` subcommand run as a separate process, which a
// test can kill with SIGKILL and start again with the same arguments,
// environment and (for serve) HTTP address. Its stdout and stderr are kept,
// and JSON log lines are counted by their "msg", so a test can wait for
// "listening" or "broker connected".
type Process struct {
	// Name identifies the process in logs, e.g. gateway-a.
	Name string
	// Addr is the HTTP address of a serve process (kept across restarts),
	// empty otherwise.
	Addr string

	bin  string
	args []string
	env  []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	runs    int
	logs    bytes.Buffer
	counts  map[string]int
	changed chan struct{} // closed and replaced whenever counts change
}

// serveEnv is what a serve process gets on top of env: a fixed loopback
// HTTP address and JSON logs.
func serveEnv(addr string, env []string) []string {
	return append(append([]string{}, env...), "SWITCHBOARD_HTTP_ADDR="+addr, "SWITCHBOARD_LOG_FORMAT=json")
}

// StartServe starts `switchboard serve` on a free loopback port with env
// (SWITCHBOARD_DATABASE_URL, SWITCHBOARD_AMQP_URL, names, timeouts ...),
// and waits until it listens. It does not wait for the broker: use
// WaitLog(t, "broker connected", n, d) for that. The process is killed when
// t ends.
func StartServe(t testing.TB, bin, name string, env []string) *Process {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	p := newProcess(t, bin, name, []string{"serve"}, serveEnv(addr, env))
	p.Addr = addr
	p.Start(t)
	return p
}

// StartEcho starts `switchboard echo PATTERNS...` with env
// (SWITCHBOARD_AMQP_URL, SWITCHBOARD_REQUEST_EXCHANGE,
// SWITCHBOARD_ECHO_QUEUE) and waits until it consumes. It is killed when t
// ends.
func StartEcho(t testing.TB, bin, name string, env []string, patterns ...string) *Process {
	t.Helper()
	p := newProcess(t, bin, name, append([]string{"echo"}, patterns...), append(append([]string{}, env...), "SWITCHBOARD_LOG_FORMAT=json"))
	p.Start(t)
	p.WaitLog(t, "echo responder ready", 1, 60*time.Second)
	return p
}

func newProcess(t testing.TB, bin, name string, args, env []string) *Process {
	p := &Process{Name: name, bin: bin, args: args, env: append(environWithout("SWITCHBOARD_"), env...),
		counts: map[string]int{}, changed: make(chan struct{})}
	t.Cleanup(func() {
		p.kill()
		if p.Races() {
			t.Errorf("faultenv: %s reported a data race:\n%s", name, p.raceReports())
		}
		if t.Failed() {
			t.Logf("faultenv: %s log tail:\n%s", name, tail(p.Logs(), 6000))
		}
	})
	return p
}

// environWithout is this process's environment without the variables
// whose names start with prefix: a switchboard process gets only the
// settings its test gives it, whatever the shell running the tests has.
func environWithout(prefix string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

// URL is the base URL of a serve process, e.g. http://127.0.0.1:41234.
func (p *Process) URL() string { return "http://" + p.Addr }

// Running reports whether the process is alive.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runningLocked()
}

func (p *Process) runningLocked() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Start starts the process (again, after Kill or Stop), and for serve
// waits until it listens, which needs Postgres (migrations run first).
func (p *Process) Start(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	if p.runningLocked() {
		p.mu.Unlock()
		t.Fatalf("faultenv: %s is already running", p.Name)
	}
	listening := p.counts["listening"]
	p.runs++
	fmt.Fprintf(&p.logs, "--- faultenv: start #%d of %s ---\n", p.runs, p.Name)
	r, w, err := os.Pipe()
	if err != nil {
		p.mu.Unlock()
		t.Fatalf("faultenv: pipe: %v", err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		_ = r.Close()
		_ = w.Close()
		t.Fatalf("faultenv: start %s: %v", p.Name, err)
	}
	_ = w.Close()
	exited := make(chan struct{})
	read := make(chan struct{})
	go func() { p.read(r); close(read) }()
	go func() {
		err := cmd.Wait()
		<-read
		p.mu.Lock()
		fmt.Fprintf(&p.logs, "--- faultenv: %s exited: %v ---\n", p.Name, err)
		p.mu.Unlock()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()

	if p.Addr != "" {
		p.WaitLog(t, "listening", listening+1, 60*time.Second)
	}
}

func (p *Process) read(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		var entry struct {
			Msg string `json:"msg"`
		}
		_ = json.Unmarshal([]byte(line), &entry)
		p.mu.Lock()
		p.logs.WriteString(line)
		p.logs.WriteByte('\n')
		if entry.Msg != "" {
			p.counts[entry.Msg]++
			close(p.changed)
			p.changed = make(chan struct{})
		}
		p.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

// Count returns how many log lines with this msg the process has written,
// over all its runs.
func (p *Process) Count(msg string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[msg]
}

// WaitLog waits until the process has written at least n log lines with
// this msg (over all its runs), and fails t after timeout or when the
// process exits first.
func (p *Process) WaitLog(t testing.TB, msg string, n int, timeout time.Duration) {
	t.Helper()
	if err := p.AwaitLog(msg, n, timeout); err != nil {
		t.Fatalf("faultenv: %v\n%s", err, tail(p.Logs(), 4000))
	}
}

// AwaitLog is WaitLog returning an error instead of failing the test, for
// use off the test goroutine.
func (p *Process) AwaitLog(msg string, n int, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		count, changed, exited := p.counts[msg], p.changed, p.exited
		p.mu.Unlock()
		if count >= n {
			return nil
		}
		select {
		case <-changed:
		case <-exited:
			return fmt.Errorf("%s exited before logging %q %d times", p.Name, msg, n)
		case <-timer.C:
			return fmt.Errorf("%s logged %q %d times in %s, want %d", p.Name, msg, count, timeout, n)
		}
	}
}

// Logs returns everything the process wrote, over all its runs.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Races reports whether the race detector reported a data race.
func (p *Process) Races() bool { return strings.Contains(p.Logs(), "WARNING: DATA RACE") }

func (p *Process) raceReports() string {
	logs := p.Logs()
	i := strings.Index(logs, "WARNING: DATA RACE")
	if i < 0 {
		return ""
	}
	return tail(logs[i:], 20000)
}

// Kill sends SIGKILL (no shutdown: in-flight requests, unacked replies and
// unconfirmed publishes are abandoned) and waits until it is gone.
func (p *Process) Kill(t testing.TB) {
	t.Helper()
	if !p.Running() {
		t.Fatalf("faultenv: %s is not running", p.Name)
	}
	p.kill()
	t.Logf("faultenv: %s killed with SIGKILL", p.Name)
}

func (p *Process) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	killGroup(cmd, exited)
}

// Stop sends SIGTERM and waits for a graceful exit, which must be clean
// (exit status 0) within timeout.
func (p *Process) Stop(t testing.TB, timeout time.Duration) {
	t.Helper()
	p.mu.Lock()
	cmd, exited, running := p.cmd, p.exited, p.runningLocked()
	p.mu.Unlock()
	if !running {
		t.Fatalf("faultenv: %s is not running", p.Name)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if !cmd.ProcessState.Success() {
			t.Errorf("faultenv: %s exited with %v after SIGTERM", p.Name, cmd.ProcessState)
		}
	case <-time.After(timeout):
		p.kill()
		t.Errorf("faultenv: %s did not exit %s after SIGTERM; killed", p.Name, timeout)
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildSwitchboard builds ./cmd/switchboard of the module the bench runs in
// into dir and returns the binary's path.
func buildSwitchboard(ctx context.Context, dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is needed to build the gateway (or pass -switchboard-bin): %w", err)
	}
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the switchboard module: run from the repository or pass -switchboard-bin")
	}
	bin := filepath.Join(dir, "switchboard")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "./cmd/switchboard")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/switchboard: %w\n%s", err, out)
	}
	return bin, nil
}

// child is a subprocess the bench started: the gateway, or a baseline
// worker. It runs in its own process group, so a Ctrl-C at the terminal
// reaches only the bench, which then stops its children in order; and it
// is killed if the bench dies without cleaning up.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done closes

	mu   sync.Mutex
	tail []string // the last lines of its stderr, for error messages
}

// startSelf re-executes the bench binary as a worker process (its role and
// config in env), with pipes to its stdin and from its stdout.
func startSelf(name string, env ...string) (*child, io.WriteCloser, io.ReadCloser, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("find the bench executable to run the %s: %w", name, err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := startChild(name, cmd, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	return c, stdin, stdout, nil
}

// readMessages decodes, on a goroutine of its own, the JSON messages a
// child process writes on r (its stdout), handing each to handle until
// handle returns false or r ends or holds anything but JSON; then it calls
// end.
func readMessages[T any](r io.Reader, handle func(T) bool, end func()) {
	go func() {
		defer end()
		dec := json.NewDecoder(r)
		for {
			var m T
			if err := dec.Decode(&m); err != nil || !handle(m) {
				return
			}
		}
	}()
}

func startChild(name string, cmd *exec.Cmd, onLine func(string)) (*child, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.tail = append(c.tail, line)
			if len(c.tail) > 40 {
				c.tail = c.tail[len(c.tail)-40:]
			}
			c.mu.Unlock()
			if onLine != nil {
				onLine(line)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		<-lines // Wait closes the pipe: read it all first
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) logTail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop asks the child to shut down gracefully and kills it if it has not
// exited within grace. It returns the exit error of a child that did not
// exit cleanly.
func (c *child) stop(grace time.Duration) error {
	if c.exited() {
		return c.err
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.err
	case <-time.After(grace):
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGKILL) // its whole group
	<-c.done
	return fmt.Errorf("%s did not stop within %s; killed", c.name, grace)
}

// gatewayProc is a running `switchboard serve`.
type gatewayProc struct {
	*child
	addr string
	*logCounts
}

// logCounts counts the gateway's warnings and errors (its JSON log lines
// at level WARN or ERROR) and keeps the first of them.
type logCounts struct {
	mu        sync.Mutex
	warnings  int
	firstWarn string
}

func (l *logCounts) saw(level, line string) {
	if level != "WARN" && level != "ERROR" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.warnings++
	if l.firstWarn == "" {
		l.firstWarn = line
	}
}

// warned returns how many warnings and errors the gateway logged, and the
// first one.
func (l *logCounts) warned() (int, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.warnings, l.firstWarn
}

func (n names) gatewayEnv(dbURL, amqpURL string, dbMaxConns int) []string {
	return []string{
		"SWITCHBOARD_HTTP_ADDR=127.0.0.1:0",
		"SWITCHBOARD_DATABASE_URL=" + dbURL,
		"SWITCHBOARD_AMQP_URL=" + amqpURL,
		"SWITCHBOARD_REQUEST_EXCHANGE=" + n.Exchange,
		"SWITCHBOARD_REPLY_QUEUE=" + n.ReplyQueue,
		"SWITCHBOARD_EVENTS_EXCHANGE=" + n.EventsExchange,
		"SWITCHBOARD_DEAD_LETTER_EXCHANGE=" + n.DeadLetterExchange,
		"SWITCHBOARD_DEAD_LETTER_QUEUE=" + n.DeadLetterQueue,
		"SWITCHBOARD_EVENT_HISTORY_QUEUE=" + n.EventHistoryQueue,
		"SWITCHBOARD_DB_MAX_CONNS=" + strconv.Itoa(dbMaxConns),
		"SWITCHBOARD_LOG_FORMAT=json",
		"SWITCHBOARD_LOG_LEVEL=info",
	}
}

// createKey makes the API key the bench's clients send, with `bin keys
// create` against the bench's database: the gateway is measured as it is
// deployed, authenticating every call, not with --insecure-no-auth.
func createKey(ctx context.Context, bin, dbURL string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, "keys", "create", "--project", "default", "--name", "bench",
		"--scope", "submit:#", "--scope", "read:#")
	cmd.Env = append(os.Environ(), "SWITCHBOARD_DATABASE_URL="+dbURL)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return "", fmt.Errorf("%s keys create: %w\n%s", bin, err, stderr)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "key:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s keys create printed no key:\n%s", bin, out)
}

// startGateway runs `bin serve` with env (after the bench's own
// environment, so other SWITCHBOARD_* settings pass through) and waits until
// it listens, has its broker session and answers /readyz.
func startGateway(ctx context.Context, bin string, env []string) (*gatewayProc, error) {
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), env...)
	addrc := make(chan string, 1)
	connected := make(chan struct{}, 1)
	counts := &logCounts{}
	c, err := startChild("gateway", cmd, func(line string) {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Addr  string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil {
			return
		}
		counts.saw(entry.Level, line)
		switch entry.Msg {
		case "listening":
			select {
			case addrc <- entry.Addr:
			default:
			}
		case "broker connected":
			select {
			case connected <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		return nil, err
	}
	g := &gatewayProc{child: c, logCounts: counts}
	fail := func(err error) (*gatewayProc, error) {
		_ = c.stop(5 * time.Second)
		return nil, fmt.Errorf("%w\ngateway log:\n%s", err, c.logTail())
	}
	deadline := time.After(60 * time.Second)
	for g.addr == "" || connected != nil {
		select {
		case g.addr = <-addrc:
		case <-connected:
			connected = nil
		case <-c.done:
			return fail(fmt.Errorf("gateway exited at start: %v", c.err))
		case <-deadline:
			return fail(errors.New("gateway did not start within 60s"))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	probe := &http.Client{Timeout: 5 * time.Second}
	for {
		res, err := probe.Get("http://" + g.addr + "/readyz")
		if err == nil {
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return g, nil
			}
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			return fail(errors.New("gateway not ready within 60s"))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
}

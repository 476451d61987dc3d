package faultenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// RabbitBinDir holds rabbitmq-server and rabbitmqctl; the /usr/sbin
// wrappers would switch to the rabbitmq user and its shared cookie.
const RabbitBinDir = "/usr/lib/rabbitmq/bin"

// rabbitStartTimeout bounds one node start, boot included.
const rabbitStartTimeout = 90 * time.Second

// Rabbit is a throwaway RabbitMQ node: its own Erlang node name, cookie,
// data directory and loopback ports, and no plugins (so nothing else, such
// as the management listener on 15672, clashes with the shared node).
// Stop or Kill it and Start it again: the data directory is kept, so durable
// exchanges, queues and persistent messages survive, as on a real restart.
type Rabbit struct {
	// Node is the Erlang node name, e.g. sbfault-0a1b2c3d4e@localhost.
	Node string
	// Port is the AMQP port on 127.0.0.1.
	Port int
	// DistPort is the Erlang distribution port on 127.0.0.1.
	DistPort int
	// Dir holds the node's data, logs, cookie and configuration.
	Dir string

	env    []string // the server's environment
	ctlEnv []string // rabbitmqctl's environment

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
	startups []time.Duration
}

// StartRabbit starts a throwaway RabbitMQ node and waits until it accepts
// AMQP connections. It is stopped and its directory removed when t ends.
func StartRabbit(t testing.TB) *Rabbit {
	t.Helper()
	requireExecutable(t, filepath.Join(RabbitBinDir, "rabbitmq-server"))
	requireExecutable(t, filepath.Join(RabbitBinDir, "rabbitmqctl"))
	dir, err := os.MkdirTemp("", "sbfault-rmq-")
	if err != nil {
		t.Fatalf("faultenv: rabbit dir: %v", err)
	}
	r := &Rabbit{
		Node:     "sbfault-" + randomSuffix() + "@localhost",
		Port:     FreePort(t),
		DistPort: FreePort(t),
		Dir:      dir,
	}
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			t.Logf("faultenv: rabbit %s log tail:\n%s", r.Node, readTail(r.logFile(), 4000))
		}
		removeDir(t, "rabbit", dir)
	})
	if err := r.writeFiles(); err != nil {
		t.Fatalf("faultenv: rabbit files: %v", err)
	}
	r.Start(t)
	return r
}

func (r *Rabbit) writeFiles() error {
	home := filepath.Join(r.Dir, "home")
	for _, d := range []string{home, filepath.Join(r.Dir, "mnesia"), filepath.Join(r.Dir, "log")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	// The node's own cookie, so rabbitmqctl with the same HOME can talk to
	// it, and nothing else can.
	if err := os.WriteFile(filepath.Join(home, ".erlang.cookie"), []byte(strings.ToUpper(randomSuffix()+randomSuffix())), 0o400); err != nil {
		return err
	}
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\ndisk_free_limit.absolute = 50MB\n", r.Port)
	files := map[string]string{
		"rabbitmq.conf":     conf,
		"enabled_plugins":   "[].\n",
		"rabbitmq-env.conf": "# faultenv: everything comes from the environment\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(r.Dir, name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	base := cleanEnv()
	r.ctlEnv = append(append([]string{}, base...),
		"HOME="+home,
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"ERL_FLAGS=-kernel inet_dist_use_interface {127,0,0,1}",
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(r.Dir, "rabbitmq-env.conf"),
	)
	r.env = append(append([]string{}, base...),
		"HOME="+home,
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"RABBITMQ_NODENAME="+r.Node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(r.Port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(r.DistPort),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(r.Dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(r.Dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(r.Dir, "rabbit.pid"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(r.Dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(r.Dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(r.Dir, "advanced.config"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(r.Dir, "rabbitmq-env.conf"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
	)
	return nil
}

// cleanEnv is this process's environment without anything that would
// point a RabbitMQ or Erlang tool at the shared node.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOME" || strings.HasPrefix(k, "RABBITMQ_") || strings.HasPrefix(k, "ERL_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (r *Rabbit) logFile() string {
	return filepath.Join(r.Dir, "log", r.Node+".log")
}

// URL is the node's AMQP URL (guest may log in over loopback).
func (r *Rabbit) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", r.Port) }

// Addr is the node's AMQP host:port.
func (r *Rabbit) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// Running reports whether the node's process is alive.
func (r *Rabbit) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runningLocked()
}

func (r *Rabbit) runningLocked() bool {
	if r.cmd == nil {
		return false
	}
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

// Startups returns how long each start took, until the node accepted an
// AMQP connection.
func (r *Rabbit) Startups() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.startups...)
}

// Start starts the node (again, after Stop or Kill) on the same data
// directory, and waits until it accepts AMQP connections.
func (r *Rabbit) Start(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	if r.runningLocked() {
		r.mu.Unlock()
		t.Fatalf("faultenv: rabbit %s is already running", r.Node)
	}
	console, err := os.OpenFile(filepath.Join(r.Dir, "log", "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.mu.Unlock()
		t.Fatalf("faultenv: rabbit console log: %v", err)
	}
	cmd := exec.Command(filepath.Join(RabbitBinDir, "rabbitmq-server"))
	cmd.Dir = r.Dir
	cmd.Env = r.env
	cmd.Stdout, cmd.Stderr = console, console
	// Own process group, so Kill takes erl_child_setup and friends along;
	// killed with the test process if that dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		_ = console.Close()
		t.Fatalf("faultenv: start rabbit: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = console.Close(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	r.mu.Unlock()

	deadline := time.Now().Add(rabbitStartTimeout)
	for {
		conn, err := amqp.DialConfig(r.URL(), amqp.Config{Dial: amqp.DefaultDial(time.Second)})
		if err == nil {
			_ = conn.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("faultenv: rabbit %s exited while starting:\n%s\n%s", r.Node,
				readTail(filepath.Join(r.Dir, "log", "console.log"), 3000), readTail(r.logFile(), 3000))
		default:
		}
		if time.Now().After(deadline) {
			r.kill()
			t.Fatalf("faultenv: rabbit %s not ready after %s:\n%s", r.Node, rabbitStartTimeout, readTail(r.logFile(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(started)
	r.mu.Lock()
	r.startups = append(r.startups, took)
	r.mu.Unlock()
	t.Logf("faultenv: rabbit %s ready on %s in %s", r.Node, r.Addr(), took.Round(time.Millisecond))
}

// Ctl runs rabbitmqctl against this node (rabbitmqctl -n NODE ARGS...).
func (r *Rabbit) Ctl(args ...string) (string, error) {
	return run(60*time.Second, r.ctlEnv, filepath.Join(RabbitBinDir, "rabbitmqctl"), append([]string{"-n", r.Node}, args...)...)
}

// Stop shuts the node down cleanly (rabbitmqctl stop) and waits for its
// process to exit; when that does not work within 30s, it is killed.
func (r *Rabbit) Stop(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	cmd, exited, running := r.cmd, r.exited, r.runningLocked()
	r.mu.Unlock()
	if !running {
		t.Fatalf("faultenv: rabbit %s is not running", r.Node)
	}
	started := time.Now()
	if out, err := r.Ctl("stop"); err != nil {
		t.Logf("faultenv: rabbitmqctl stop failed, sending SIGTERM: %v\n%s", err, out)
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-exited:
		t.Logf("faultenv: rabbit %s stopped in %s", r.Node, time.Since(started).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Logf("faultenv: rabbit %s did not exit 30s after stop; killing it", r.Node)
		r.kill()
	}
}

// Kill kills the node with SIGKILL (a crash: no clean shutdown) and waits
// for it to be gone.
func (r *Rabbit) Kill(t testing.TB) {
	t.Helper()
	if !r.Running() {
		t.Fatalf("faultenv: rabbit %s is not running", r.Node)
	}
	r.kill()
	t.Logf("faultenv: rabbit %s killed", r.Node)
}

func (r *Rabbit) kill() {
	r.mu.Lock()
	cmd, exited := r.cmd, r.exited
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	killGroup(cmd, exited)
}

// killGroup SIGKILLs cmd's process group and waits for cmd to be reaped.
func killGroup(cmd *exec.Cmd, exited <-chan struct{}) {
	select {
	case <-exited:
	default:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
	}
	// Children left in the group (they normally die with their parent).
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

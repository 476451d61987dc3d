package faultenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchboard-gw/switchboard/migrations"
)

// PostgresBinDir holds initdb, postgres and pg_ctl.
const PostgresBinDir = "/usr/lib/postgresql/15/bin"

// Postgres is a throwaway Postgres cluster in its own directory, owned by
// the postgres user, listening on 127.0.0.1 only, with trust authentication
// and fsync on (the fault suite tests durability: what was committed before
// an immediate shutdown must be there after the restart).
type Postgres struct {
	// Port is the TCP port on 127.0.0.1.
	Port int
	// Dir holds the cluster (Dir/data), its log and its unix socket.
	Dir string

	uid, gid uint32

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	startups []time.Duration
}

// StartPostgres creates a cluster with initdb, starts it and waits until it
// accepts connections. It is stopped and its directory removed when t ends.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	for _, b := range []string{"initdb", "postgres", "pg_ctl"} {
		requireExecutable(t, filepath.Join(PostgresBinDir, b))
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		unavailable(t, "no postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	// Not t.TempDir: the postgres user must be able to reach it.
	dir, err := os.MkdirTemp("", "sbfault-pg-")
	if err != nil {
		t.Fatalf("faultenv: postgres dir: %v", err)
	}
	p := &Postgres{Port: FreePort(t), Dir: dir, uid: uint32(uid), gid: uint32(gid)}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("faultenv: postgres :%d log tail:\n%s", p.Port, readTail(p.logFile(), 3000))
		}
		removeDir(t, "postgres", dir)
	})
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatalf("faultenv: chown %s: %v", dir, err)
	}
	started := time.Now()
	out, err := p.asPostgres(60*time.Second, filepath.Join(PostgresBinDir, "initdb"),
		"-D", p.dataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-instructions")
	if err != nil {
		t.Fatalf("faultenv: initdb: %v\n%s", err, out)
	}
	conf := fmt.Sprintf(`
# faultenv
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
log_min_messages = warning
`, p.Port, p.Dir)
	f, err := os.OpenFile(filepath.Join(p.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(conf)
		_ = f.Close()
	}
	if err != nil {
		t.Fatalf("faultenv: postgresql.conf: %v", err)
	}
	t.Logf("faultenv: postgres cluster initialised in %s", time.Since(started).Round(time.Millisecond))
	p.Start(t)
	return p
}

func (p *Postgres) dataDir() string { return filepath.Join(p.Dir, "data") }
func (p *Postgres) logFile() string { return filepath.Join(p.Dir, "postgres.log") }

// asPostgres runs a short command as the postgres user (runuser).
func (p *Postgres) asPostgres(timeout time.Duration, name string, args ...string) (string, error) {
	return run(timeout, nil, "runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
}

// Addr is the cluster's host:port.
func (p *Postgres) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.Port) }

// URL is the URL of database db on the cluster.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, db)
}

// Database creates a database, applies the switchboard migrations to it and
// returns its URL.
func (p *Postgres) Database(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := "sbfault_" + randomSuffix()
	admin, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		t.Fatalf("faultenv: connect to postgres: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("faultenv: create database: %v", err)
	}
	conn, err := pgx.Connect(ctx, p.URL(name))
	if err != nil {
		t.Fatalf("faultenv: connect to %s: %v", name, err)
	}
	defer conn.Close(ctx)
	if _, err := migrations.Up(ctx, conn); err != nil {
		t.Fatalf("faultenv: migrate %s: %v", name, err)
	}
	return p.URL(name)
}

// Running reports whether the postmaster is alive.
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runningLocked()
}

func (p *Postgres) runningLocked() bool {
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

// Startups returns how long each start took, until the server accepted a
// connection.
func (p *Postgres) Startups() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.startups...)
}

// Start starts the postmaster (again) and waits until it accepts
// connections; after an immediate stop that includes crash recovery.
//
// The postmaster runs as a child of the test process, as the postgres user,
// rather than daemonised by pg_ctl: so it is killed with the test process
// if that dies before its cleanup could run.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	if p.runningLocked() {
		p.mu.Unlock()
		t.Fatalf("faultenv: postgres :%d is already running", p.Port)
	}
	logf, err := os.OpenFile(p.logFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		t.Fatalf("faultenv: postgres log: %v", err)
	}
	cmd := exec.Command(filepath.Join(PostgresBinDir, "postgres"), "-D", p.dataDir())
	cmd.Dir = p.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + p.Dir}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: p.uid, Gid: p.gid},
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		_ = logf.Close()
		t.Fatalf("faultenv: start postgres: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(exited) }()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()

	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		if err == nil {
			_ = conn.Close(ctx)
			cancel()
			break
		}
		cancel()
		select {
		case <-exited:
			t.Fatalf("faultenv: postgres exited while starting:\n%s", readTail(p.logFile(), 3000))
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			t.Fatalf("faultenv: postgres not ready after 60s: %v\n%s", err, readTail(p.logFile(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(started)
	p.mu.Lock()
	p.startups = append(p.startups, took)
	p.mu.Unlock()
	t.Logf("faultenv: postgres ready on %s in %s", p.Addr(), took.Round(time.Millisecond))
}

// Stop stops the server with pg_ctl stop -m mode: "immediate" is a crash
// as far as the database is concerned (no checkpoint; the next start runs
// recovery), "fast" a clean shutdown that disconnects clients. It waits
// until the postmaster has exited.
func (p *Postgres) Stop(t testing.TB, mode string) {
	t.Helper()
	p.mu.Lock()
	exited, running := p.exited, p.runningLocked()
	p.mu.Unlock()
	if !running {
		t.Fatalf("faultenv: postgres :%d is not running", p.Port)
	}
	started := time.Now()
	out, err := p.asPostgres(60*time.Second, filepath.Join(PostgresBinDir, "pg_ctl"), "-D", p.dataDir(), "-m", mode, "-w", "-t", "30", "stop")
	if err != nil {
		t.Logf("faultenv: pg_ctl stop -m %s: %v\n%s; killing the postmaster", mode, err, out)
		p.kill()
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Logf("faultenv: postmaster still there 30s after pg_ctl stop; killing it")
		p.kill()
	}
	t.Logf("faultenv: postgres stopped (-m %s) in %s", mode, time.Since(started).Round(time.Millisecond))
}

func (p *Postgres) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
	default:
		// SIGQUIT is an immediate shutdown: the postmaster takes its
		// backends down with it.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
	}
	killGroup(cmd, exited)
}

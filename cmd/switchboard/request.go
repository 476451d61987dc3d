package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/client"
)

// defaultGatewayURL is where request and get find a gateway run locally.
const defaultGatewayURL = "http://127.0.0.1:8080"

// callTimeout bounds a call that does not wait for a reply (a submit
// without --wait, a get), so that a gateway that never answers does not
// hang the command.
const callTimeout = 30 * time.Second

const requestUsage = `usage:
  switchboard request PATH [-d JSON|@FILE|@-] [--wait 30s] [--follow] [--timeout 60s]
  switchboard get ID

request submits a JSON body (-d; default {}) to the gateway at PATH, e.g.
/workflow/create for the routing key workflow.create, and shows the
request's record. --wait D waits up to D for the reply and shows the final
record. --follow shows the request's events as they come, progress as a bar
on a terminal, until the reply, then shows the final record (--wait then
bounds how long it follows). get shows a request's record as it is now.

On a terminal the record is shown for reading. Otherwise stdout gets JSON:
the record as the API answers it, one document on one line; with --follow,
one event per line (its CloudEvent), then the record.

The gateway is --url or SWITCHBOARD_URL (default http://127.0.0.1:8080).
The API key is SWITCHBOARD_API_KEY, or the first line of --key-file; it is
sent as 'Authorization: Bearer <key>' and never printed.

Exit status:
  0  the record was shown (with --wait or --follow: the request was replied)
  1  the gateway answered an error (details on stderr), could not be
     reached, or the command was interrupted
  2  usage: a bad flag, argument, URL, key file or -d body; nothing was sent
  3  the request ended without a reply: failed, expired, unroutable or
     cancelled (the record is shown; a failed request's reply says why)
  4  --wait ran out before the request ended (the record is shown)

flags:
`

// Exit statuses of request and get (see requestUsage).
const (
	exitFailure   = 1 // and any error of the other commands but a usage error
	exitUsage     = 2
	exitNoReply   = 3
	exitWaitedOut = 4
)

// exitCode ends a command with a status of its own; the command has said
// why on stderr already.
type exitCode struct {
	code int
	err  error
}

func (e *exitCode) Error() string { return e.err.Error() }
func (e *exitCode) Unwrap() error { return e.err }

// exitStatus is the process's exit status for run's error, which it prints
// to stderr unless the command has.
func exitStatus(stderr io.Writer, err error) int {
	var ec *exitCode
	if errors.As(err, &ec) {
		return ec.code
	}
	fmt.Fprintln(stderr, "switchboard:", err)
	if errors.Is(err, errUsage) {
		return exitUsage // every command's usage errors, not only request's
	}
	return exitFailure
}

// cliIO is where a command for people reads and writes; tty says stdout is
// a terminal, which gets text for reading instead of JSON.
type cliIO struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	tty            bool
}

// newCLIIO is the process's own input and output, JSON on stdout unless it
// is a terminal.
func newCLIIO(stdin io.Reader, stdout, stderr io.Writer) cliIO {
	return cliIO{stdin: stdin, stdout: stdout, stderr: stderr, tty: isTerminal(stdout)}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// usageError says what is wrong with the command line and ends with exit 2.
func (c cliIO) usageError(cmd string, err error) error {
	fmt.Fprintf(c.stderr, "switchboard %s: %v\nRun 'switchboard %s -h' for usage.\n", cmd, err, cmd)
	return &exitCode{exitUsage, err}
}

// callError says, readably, why a call to the gateway at base failed, and
// ends with exit 1: the problem details the gateway answered, or why it
// could not be reached.
func (c cliIO) callError(cmd, base string, err error) error {
	var ue *url.Error
	switch e, ok := client.AsError(err); {
	case ok:
		status := fmt.Sprintf("HTTP %d", e.Status)
		if k := e.Kind(); k != "" {
			status += ", " + k
		}
		fmt.Fprintf(c.stderr, "switchboard %s: the gateway answered: %s (%s)\n", cmd, e.Title, status)
		if e.Detail != "" {
			fmt.Fprintf(c.stderr, "  %s\n", e.Detail)
		}
		if e.RetryAfter > 0 {
			fmt.Fprintf(c.stderr, "  try again in %s\n", e.RetryAfter)
		}
		switch {
		case client.IsUnauthorized(err):
			fmt.Fprintln(c.stderr, "  set SWITCHBOARD_API_KEY or --key-file to a valid API key")
		case client.IsForbidden(err):
			fmt.Fprintln(c.stderr, "  the API key lacks the scope for this call (see 'switchboard keys list')")
		}
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(c.stderr, "switchboard %s: interrupted\n", cmd)
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(c.stderr, "switchboard %s: the gateway at %s did not answer within %s\n", cmd, base, callTimeout)
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "switchboard %s: cannot reach the gateway at %s: %v\n", cmd, base, ue.Err)
	default:
		fmt.Fprintf(c.stderr, "switchboard %s: %v\n", cmd, err)
	}
	return &exitCode{exitFailure, err}
}

// outcome is the command's result for a record it has shown: exit 3 when
// the request ended without a reply.
func (c cliIO) outcome(cmd string, rec *client.Record) error {
	var why string
	switch rec.Status {
	case client.StatusFailed:
		why = "failed: the responder answered with an error"
	case client.StatusExpired:
		why = "expired: no reply came before its deadline"
	case client.StatusUnroutable:
		why = "is unroutable: no queue is bound for its routing key"
	case client.StatusCancelled:
		why = "was cancelled"
	default:
		return nil
	}
	err := fmt.Errorf("request %s %s", rec.ID, why)
	fmt.Fprintf(c.stderr, "switchboard %s: %v\n", cmd, err)
	return &exitCode{exitNoReply, err}
}

// gatewayFlags are the flags of a command that calls a gateway.
type gatewayFlags struct {
	url, keyFile string
}

func (g *gatewayFlags) add(f *envFlags) {
	f.str(&g.url, "url", "SWITCHBOARD_URL", defaultGatewayURL, "the gateway's base URL")
	f.fs.StringVar(&g.keyFile, "key-file", "", "file whose first line is the API key (default: env SWITCHBOARD_API_KEY)")
}

// client returns a client of the gateway with the API key, if any.
func (g *gatewayFlags) client(getenv func(string) string) (*client.Client, error) {
	key := getenv("SWITCHBOARD_API_KEY")
	if g.keyFile != "" {
		f, err := os.Open(g.keyFile)
		if err != nil {
			return nil, fmt.Errorf("key file: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Scan()
		if key = strings.TrimSpace(sc.Text()); key == "" {
			return nil, fmt.Errorf("key file %s: the first line holds no key", g.keyFile)
		}
	}
	return client.New(g.url, client.WithKey(key))
}

// parseInterspersed parses flags that may come before, between and after
// the positional arguments (a person writes `request /a/b -d {}`), and
// returns the positional ones; after "--" everything is positional.
func parseInterspersed(f *envFlags, args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.parse(args); err != nil {
			return nil, err
		}
		rest := f.fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseCommandLine parses a request or get command line: flag.ErrHelp for
// -h, which prints the usage to stdout, and exit 2 for a flag the flag
// package refused (it has said which).
func parseCommandLine(f *envFlags, args []string, c cliIO) ([]string, error) {
	f.fs.Usage = func() {} // the whole usage for -h only, not for every typo
	pos, err := parseInterspersed(f, args)
	switch {
	case err == nil:
		return pos, nil
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(c.stdout, requestUsage)
		f.fs.SetOutput(c.stdout)
		f.fs.PrintDefaults()
		return nil, err
	}
	fmt.Fprintf(c.stderr, "Run 'switchboard %s -h' for usage.\n", f.fs.Name())
	return nil, &exitCode{exitUsage, err}
}

// durationFlag adds a duration flag that also takes plain seconds (30).
func durationFlag(f *envFlags, p *time.Duration, name, help string) {
	f.fs.Func(name, help, func(v string) error {
		d, err := parseDuration(v)
		if err != nil {
			return err
		}
		if d < 0 {
			return errors.New("must not be negative")
		}
		*p = d
		return nil
	})
}

// runRequest runs `switchboard request`.
func runRequest(ctx context.Context, args []string, getenv func(string) string, c cliIO) error {
	f := newEnvFlags("request", getenv, c.stderr)
	var g gatewayFlags
	g.add(f)
	var data string
	var wait, timeout time.Duration
	var follow bool
	f.fs.StringVar(&data, "d", "{}", "the JSON body: JSON text, @FILE to read a file, @- to read stdin")
	f.fs.StringVar(&data, "data", "{}", "the same as -d")
	durationFlag(f, &wait, "wait", "wait up to this long for the reply, e.g. 30s, 5m (default: no wait); with --follow: follow this long at most")
	f.fs.BoolVar(&follow, "follow", false, "show the request's events as they come, until the reply")
	durationFlag(f, &timeout, "timeout", "the request's deadline, sent as Request-Timeout (default: the gateway's)")
	var expect int
	f.fs.Func("expect", "gather this many replies, one per responder: 1 to 100, or all until the deadline (Expect-Replies; default: the gateway's)",
		func(v string) error {
			if strings.EqualFold(v, "all") {
				expect = client.ExpectAll
				return nil
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100 {
				return errors.New("want a number from 1 to 100, or all")
			}
			expect = n
			return nil
		})
	pos, err := parseCommandLine(f, args, c)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return c.usageError("request", errors.New("want one PATH, e.g. /workflow/create"))
	}
	key, err := routingKeyOf(pos[0])
	if err != nil {
		return c.usageError("request", err)
	}
	body, err := readBody(data, c.stdin)
	if err != nil {
		return c.usageError("request", err)
	}
	cl, err := g.client(getenv)
	if err != nil {
		return c.usageError("request", err)
	}
	// The id is ours, so that a submit the broker returns (unroutable) can
	// still be shown, and Do may retry without submitting twice.
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("message id: %w", err)
	}
	opts := &client.SubmitOptions{MessageID: id, Timeout: timeout, ExpectReplies: expect}
	r := requestRun{cliIO: c, cl: cl, base: g.url, key: key, body: json.RawMessage(body), opts: opts, start: time.Now()}
	switch {
	case follow:
		return r.follow(ctx, wait)
	case wait > 0:
		return r.wait(ctx, wait)
	}
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rec, err := cl.Submit(callCtx, key, r.body, opts)
	if err != nil {
		return r.submitError(ctx, err)
	}
	c.showRecord(rec, 0)
	return c.outcome("request", rec)
}

// requestRun is one `switchboard request` under way.
type requestRun struct {
	cliIO
	cl    *client.Client
	base  string
	key   string
	body  json.RawMessage
	opts  *client.SubmitOptions
	start time.Time
}

// wait submits the request and waits up to d for it to end (Prefer: wait,
// then long-polls).
func (r requestRun) wait(ctx context.Context, d time.Duration) error {
	opts := *r.opts
	opts.Wait = d
	rec, err := r.cl.Do(ctx, r.key, r.body, &opts)
	switch {
	case err == nil:
		r.showRecord(rec, time.Since(r.start))
		return r.outcome("request", rec)
	case errors.Is(err, client.ErrWaitTimeout) && rec != nil:
		r.showRecord(rec, time.Since(r.start))
		return r.waitedOut(rec, d)
	}
	if rec == nil {
		return r.submitError(ctx, err)
	}
	// Submitted, but the wait broke off (interrupted, or the gateway went
	// away): the request goes on.
	fmt.Fprintf(r.stderr, "switchboard request: request %s was submitted; see 'switchboard get %s'\n", rec.ID, rec.ID)
	return r.callError("request", r.base, err)
}

// waitedOut ends a wait that ran out before the request ended.
func (r requestRun) waitedOut(rec *client.Record, d time.Duration) error {
	err := fmt.Errorf("request %s is still %s after %s", rec.ID, rec.Status, d)
	fmt.Fprintf(r.stderr, "switchboard request: %v; see 'switchboard get %s'\n", err, rec.ID)
	return &exitCode{exitWaitedOut, err}
}

// submitError reports a submit that failed. The broker returning the
// request (unroutable) ends it, recorded: that is shown, with exit 3.
func (r requestRun) submitError(ctx context.Context, err error) error {
	if !client.IsUnroutable(err) {
		return r.callError("request", r.base, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rec, gerr := r.cl.Get(callCtx, r.opts.MessageID)
	if gerr != nil {
		return r.callError("request", r.base, err)
	}
	r.showRecord(rec, 0)
	return r.outcome("request", rec)
}

// follow submits the request and shows its events until the final one,
// the record, for up to d (0: until it ends).
func (r requestRun) follow(ctx context.Context, d time.Duration) error {
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	rec, err := r.cl.Submit(callCtx, r.key, r.body, r.opts)
	cancel()
	if err != nil {
		return r.submitError(ctx, err)
	}
	if r.tty {
		fmt.Fprintf(r.stdout, "request %s (%s) %s; following its events\n", rec.ID, rec.RoutingKey, rec.Status)
	}
	followCtx := ctx
	if d > 0 {
		var cancel context.CancelFunc
		followCtx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	bar := &progressLine{w: r.stdout}
	for ev, err := range r.cl.Events(followCtx, rec.ID) {
		if err != nil {
			bar.end()
			if ctx.Err() == nil && followCtx.Err() != nil {
				return r.followedOut(ctx, rec, d)
			}
			fmt.Fprintf(r.stderr, "switchboard request: request %s was submitted; see 'switchboard get %s'\n", rec.ID, rec.ID)
			return r.callError("request", r.base, err)
		}
		if !ev.Final() {
			if r.tty {
				bar.event(ev)
			} else {
				r.jsonLine(ev.Data)
			}
			continue
		}
		bar.end()
		final, err := ev.Record()
		if err != nil {
			return r.callError("request", r.base, err)
		}
		if r.tty {
			r.showRecord(final, time.Since(r.start))
		} else {
			r.jsonLine(ev.Data)
		}
		return r.outcome("request", final)
	}
	// The stream was over before it began (resumed after its end): read
	// the record instead.
	callCtx, cancel = context.WithTimeout(ctx, callTimeout)
	defer cancel()
	final, err := r.cl.Get(callCtx, rec.ID)
	if err != nil {
		return r.callError("request", r.base, err)
	}
	r.showRecord(final, time.Since(r.start))
	return r.outcome("request", final)
}

// followedOut ends a --follow whose --wait ran out: the record as it is
// now is shown.
func (r requestRun) followedOut(ctx context.Context, rec *client.Record, d time.Duration) error {
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	now, err := r.cl.Get(callCtx, rec.ID)
	if err != nil {
		return r.callError("request", r.base, err)
	}
	r.showRecord(now, time.Since(r.start))
	if now.Terminal() {
		return r.outcome("request", now) // it ended as the wait ran out
	}
	return r.waitedOut(now, d)
}

// runGet runs `switchboard get`.
func runGet(ctx context.Context, args []string, getenv func(string) string, c cliIO) error {
	f := newEnvFlags("get", getenv, c.stderr)
	var g gatewayFlags
	g.add(f)
	pos, err := parseCommandLine(f, args, c)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return c.usageError("get", errors.New("want one request ID"))
	}
	id, err := uuid.Parse(pos[0])
	if err != nil {
		return c.usageError("get", fmt.Errorf("%q is not a request id: request ids are UUIDs", pos[0]))
	}
	cl, err := g.client(getenv)
	if err != nil {
		return c.usageError("get", err)
	}
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rec, err := cl.Get(callCtx, id)
	if err != nil {
		return c.callError("get", g.url, err)
	}
	c.showRecord(rec, 0)
	return c.outcome("get", rec)
}

// routingKeyOf turns a request's path (/workflow/create) into its routing
// key (workflow.create); a routing key is taken as it is.
func routingKeyOf(path string) (string, error) {
	if !strings.Contains(path, "/") {
		if path == "" {
			return "", errors.New("the PATH is empty: give the request's path, e.g. /workflow/create")
		}
		return path, nil
	}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for _, s := range segs {
		if s == "" || strings.Contains(s, ".") {
			return "", fmt.Errorf("PATH %q: want segments separated by single slashes, without dots, e.g. /workflow/create", path)
		}
	}
	return strings.Join(segs, "."), nil
}

// readBody reads -d: JSON text, @FILE or @- (stdin); it must be JSON.
func readBody(data string, stdin io.Reader) ([]byte, error) {
	from := "-d"
	body := []byte(data)
	switch {
	case data == "@-":
		from = "stdin"
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read the body from stdin: %w", err)
		}
		body = b
	case strings.HasPrefix(data, "@"):
		from = data[1:]
		b, err := os.ReadFile(from)
		if err != nil {
			return nil, fmt.Errorf("read the body: %w", err)
		}
		body = b
	}
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v)
		return nil, fmt.Errorf("the body (%s) is not JSON: %v", from, err)
	}
	return body, nil
}

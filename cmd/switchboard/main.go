// Command switchboard is the HTTP-to-RabbitMQ request-reply gateway.
//
//	switchboard serve              run the gateway (applies migrations first)
//	switchboard migrate            apply database migrations and exit
//	switchboard echo [PATTERN...]  run the demo echo responder (default workflow.#)
//	switchboard rules check FILE...  validate rule files
//	switchboard rules run [DIR]      run the rules engine on its own
//	switchboard keys create|list|revoke  manage API keys
//	switchboard projects create|list     manage projects
//	switchboard request PATH [-d JSON]   submit a request to a gateway, show it
//	switchboard get ID                   show a request's record
//
// Configuration comes from SWITCHBOARD_* environment variables; flags
// override them. Run a subcommand with -h for its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		os.Exit(exitStatus(os.Stderr, err))
	}
}

const usage = `switchboard: an HTTP-to-RabbitMQ request-reply gateway

usage:
  switchboard serve [flags]              run the gateway
  switchboard migrate [flags]            apply database migrations and exit
  switchboard echo [flags] [PATTERN...]  run the demo echo responder (default pattern workflow.#)
  switchboard rules check FILE|DIR...    validate rule files
  switchboard rules run [flags] [DIR]    run the rules engine on its own
  switchboard keys create|list|revoke    manage API keys (shown once, stored hashed)
  switchboard projects create|list       manage projects
  switchboard request PATH [flags]       submit JSON to a gateway (-d, --wait, --follow), show the record
  switchboard get ID [flags]             show a request's record

Run 'switchboard COMMAND -h' for a command's flags and environment variables.
`

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	var err error
	switch args[0] {
	case "serve":
		err = runServe(ctx, args[1:], getenv, stderr)
	case "migrate":
		err = runMigrate(ctx, args[1:], getenv, stderr)
	case "echo":
		err = runEcho(ctx, args[1:], getenv, stderr)
	case "rules":
		err = runRules(ctx, args[1:], getenv, stdout, stderr)
	case "keys":
		err = runKeys(ctx, args[1:], getenv, stdout, stderr)
	case "projects":
		err = runProjects(ctx, args[1:], getenv, stdout, stderr)
	case "request":
		err = runRequest(ctx, args[1:], getenv, newCLIIO(os.Stdin, stdout, stderr))
	case "get":
		err = runGet(ctx, args[1:], getenv, newCLIIO(os.Stdin, stdout, stderr))
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h printed the flags: that is success
	}
	return err
}

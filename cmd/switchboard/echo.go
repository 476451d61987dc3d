package main

import (
	"context"
	"encoding/json"
	"io"

	"github.com/switchboard-gw/switchboard/responder"
)

// echoReply is the seed document's example reply.
type echoReply struct {
	Result  string          `json:"result"`
	Request json.RawMessage `json:"request"`
}

func echoHandler(_ context.Context, req responder.Request) (any, error) {
	return echoReply{Result: "Everything is awesome", Request: req.Body}, nil
}

func runEcho(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	f := newEnvFlags("echo", getenv, stderr)
	cfg := responder.Config{AppID: "switchboard-echo"}
	f.str(&cfg.AMQPURL, "amqp-url", "SWITCHBOARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
	f.str(&cfg.Exchange, "request-exchange", "SWITCHBOARD_REQUEST_EXCHANGE", "switchboard.requests", "topic exchange requests arrive on")
	f.str(&cfg.Queue, "queue", "SWITCHBOARD_ECHO_QUEUE", "switchboard.echo", "the echo responder's durable queue")
	f.int(&cfg.Prefetch, "prefetch", "SWITCHBOARD_ECHO_PREFETCH", 32, "unacked requests held at once")
	var logLevel, logFormat string
	f.logFlags(&logLevel, &logFormat)
	if err := f.parse(args); err != nil {
		return err
	}
	level, err := parseLog(logLevel, logFormat)
	if err != nil {
		return err
	}
	cfg.Patterns = f.fs.Args()
	if len(cfg.Patterns) == 0 {
		cfg.Patterns = []string{"workflow.#"}
	}
	cfg.Logger = newLogger(stderr, level, logFormat)
	r, err := responder.New(cfg, echoHandler)
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-r.Ready():
			cfg.Logger.Info("echo responder ready", "queue", cfg.Queue, "patterns", cfg.Patterns)
		case <-ctx.Done():
		}
	}()
	return r.Run(ctx)
}

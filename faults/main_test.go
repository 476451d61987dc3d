//go:build faults

// Package faults is switchboard's fault suite (issue 3 item 8): each test
// runs real `switchboard serve` processes against a throwaway RabbitMQ node
// and Postgres cluster (internal/faultenv), drives them with concurrent
// clients and responders, injects one fault mid-load (broker restart, AMQP
// connection cut, Postgres crash restart, gateway SIGKILL, poison replies,
// replies racing publisher confirms), and then checks the invariant against
// Postgres: nothing a client was promised is lost, no reply a responder sent
// is lost, and no client was told anything the database contradicts.
//
// Run it with `make test-faults` (go test -tags faults ./faults/...). It
// needs RabbitMQ and Postgres 15 installed (not running: it starts its own
// instances on free loopback ports and never touches the shared ones).
package faults

import (
	"fmt"
	"os"
	"testing"

	"github.com/switchboard-gw/switchboard/internal/faultenv"
)

// switchboardBin is the switchboard binary every scenario runs, built once
// by TestMain (with -race when the suite itself runs with -race).
var switchboardBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sbfault-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	switchboardBin, err = faultenv.BuildSwitchboard(dir, raceEnabled)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults: build switchboard:", err)
		return 1
	}
	return m.Run()
}

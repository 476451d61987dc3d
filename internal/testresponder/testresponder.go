// Package testresponder runs a responder SDK service for the length of a
// test, for the integration tests of packages other than responder (whose
// own tests cannot import it back).
package testresponder

import (
	"context"
	"testing"
	"time"

	"github.com/switchboard-gw/switchboard/responder"
)

// Start runs a responder with cfg and h until t ends, and returns once it
// is consuming. At the end of t it is stopped, and t fails if it does not
// stop cleanly within 10 s. A test whose handlers block until the test is
// over should release them in a t.Cleanup registered after Start: cleanups
// run last-registered first.
func Start(t testing.TB, cfg responder.Config, h responder.Handler) *responder.Responder {
	t.Helper()
	r, err := responder.New(cfg, h)
	if err != nil {
		t.Fatalf("responder: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("responder on %s: %v", cfg.Queue, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("responder on %s did not stop in 10s", cfg.Queue)
		}
	})
	select {
	case <-r.Ready():
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("responder on %s stopped before it was ready: %v", cfg.Queue, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("responder on %s never became ready", cfg.Queue)
	}
	return r
}

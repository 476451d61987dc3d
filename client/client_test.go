package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/client"
	"github.com/switchboard-gw/switchboard/internal/testresponder"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
	"github.com/switchboard-gw/switchboard/responder"
)

// The gateway binary, built once by TestMain.
var (
	gatewayBin string
	buildErr   error
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "switchboard-client-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "client test:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	gatewayBin, buildErr = testsvc.BuildGateway(dir)
	return m.Run()
}

// startGateway runs `switchboard serve --insecure-no-auth` on a free
// loopback port against the test's own database and broker names and
// returns its base URL once it listens and has connected to the broker.
func startGateway(ctx context.Context, t *testing.T, dbURL, amqpURL string, n testsvc.Names) string {
	t.Helper()
	require.NoError(t, buildErr)
	addr, _ := testsvc.StartGateway(ctx, t, gatewayBin, testsvc.GatewayEnv(dbURL, amqpURL, n,
		"SWITCHBOARD_INSECURE_NO_AUTH=true",
		// A 1 s cap on waits, so that Do must go on past Prefer: wait and
		// Wait must poll several times for client.slow's 1.5 s reply.
		"SWITCHBOARD_MAX_WAIT=1s",
	))
	return "http://" + addr
}

// progressSteps are what the responder reports on client.progress before
// it replies.
var progressSteps = []float64{0.25, 0.5, 0.75}

// startResponder serves client.# in process:
//
//   - client.echo replies {"echo": <body>} at once;
//   - client.slow replies {"slow": true} after slowFor;
//   - client.progress reports progressSteps, then replies {"done": true};
//   - client.hold replies only when the test ends (to be cancelled).
func startResponder(ctx context.Context, t *testing.T, amqpURL string, n testsvc.Names) {
	t.Helper()
	quit := make(chan struct{})
	handle := func(ctx context.Context, req responder.Request) (any, error) {
		switch req.RoutingKey {
		case "client.echo":
			return map[string]json.RawMessage{"echo": req.Body}, nil
		case "client.slow":
			time.Sleep(slowFor)
			return map[string]bool{"slow": true}, nil
		case "client.progress":
			for _, f := range progressSteps {
				if err := responder.Progress(ctx, f, fmt.Sprintf("at %v", f)); err != nil {
					return nil, fmt.Errorf("report progress: %w", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			return map[string]bool{"done": true}, nil
		case "client.hold":
			select {
			case <-quit:
				return nil, errors.New("test over")
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return nil, fmt.Errorf("unexpected routing key %s", req.RoutingKey)
	}
	testresponder.Start(t, responder.Config{
		AMQPURL: amqpURL, Exchange: n.Exchange, EventsExchange: n.EventsExchange,
		Queue: n.Queue("client"), Patterns: []string{"client.#"}, AppID: "client-test",
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, handle)
	t.Cleanup(func() { close(quit) }) // runs first: frees the held handlers
}

// slowFor is how long client.slow takes to reply.
const slowFor = 1500 * time.Millisecond

// TestClient runs the client against one real gateway and responder,
// started once for all its subtests, which run in parallel on routing keys
// and request ids of their own.
func TestClient(t *testing.T) {
	dbURL := testsvc.Database(t)
	amqpURL := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	base := startGateway(ctx, t, dbURL, amqpURL, names)
	startResponder(ctx, t, amqpURL, names)
	c, err := client.New(base)
	require.NoError(t, err)

	t.Run("SubmitGetWait", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		id := uuid.Must(uuid.NewV7())
		rec, err := c.Submit(ctx, "client.slow", map[string]int{"n": 1}, &client.SubmitOptions{MessageID: id, Timeout: 30 * time.Second})
		require.NoError(t, err)
		require.Equal(t, id, rec.ID)
		require.Equal(t, "client.slow", rec.RoutingKey)
		require.Contains(t, []string{client.StatusQueued, client.StatusPending}, rec.Status, "a 202 before the reply")
		require.False(t, rec.Terminal())
		require.JSONEq(t, `{"n": 1}`, string(rec.Request))
		require.NotEmpty(t, rec.ReadToken, "the Read-Token header")
		require.InDelta(t, rec.Time+30_000, rec.ExpiresAt, 1000)

		got, err := c.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, id, got.ID)
		require.Nil(t, got.Reply, "not replied yet: the responder takes 1.5 s")

		final, err := c.Wait(ctx, id, 20*time.Second)
		require.NoError(t, err)
		require.Equal(t, client.StatusReplied, final.Status)
		require.True(t, final.Terminal())
		require.NotNil(t, final.Reply)
		require.Equal(t, id.String(), final.Reply.CorrelationID)
		require.JSONEq(t, `{"slow": true}`, string(final.Reply.Body))
	})

	t.Run("WaitTimeout", func(t *testing.T) {
		t.Parallel()
		rec, err := c.Submit(t.Context(), "client.hold", map[string]any{}, nil)
		require.NoError(t, err)
		start := time.Now()
		last, err := c.Wait(t.Context(), rec.ID, 1500*time.Millisecond)
		require.ErrorIs(t, err, client.ErrWaitTimeout)
		require.NotNil(t, last)
		require.Equal(t, client.StatusPending, last.Status)
		require.Less(t, time.Since(start), 4*time.Second, "the timeout bounds the wait")
	})

	t.Run("Do", func(t *testing.T) {
		t.Parallel()
		rec, err := c.Do(t.Context(), "client.echo", json.RawMessage(`{"hello":"world"}`), &client.SubmitOptions{Wait: 20 * time.Second})
		require.NoError(t, err)
		require.Equal(t, client.StatusReplied, rec.Status)
		require.JSONEq(t, `{"echo": {"hello": "world"}}`, string(rec.Reply.Body))
	})

	t.Run("DoBeyondPreferWait", func(t *testing.T) {
		t.Parallel()
		// The gateway caps Prefer: wait at 1 s, before client.slow's 1.5 s
		// reply: the submit answers 202 and Do goes on with Wait.
		start := time.Now()
		rec, err := c.Do(t.Context(), "client.slow", nil, &client.SubmitOptions{Wait: 20 * time.Second})
		require.NoError(t, err)
		require.Equal(t, client.StatusReplied, rec.Status)
		require.JSONEq(t, `{"slow": true}`, string(rec.Reply.Body))
		require.GreaterOrEqual(t, time.Since(start), slowFor)

		// With a budget shorter than the reply, Do answers the record as
		// it was and ErrWaitTimeout.
		rec, err = c.Do(t.Context(), "client.slow", nil, &client.SubmitOptions{Wait: time.Second})
		require.ErrorIs(t, err, client.ErrWaitTimeout)
		require.NotNil(t, rec)
		require.False(t, rec.Terminal())
	})

	t.Run("Events", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		rec, err := c.Submit(ctx, "client.progress", map[string]any{}, nil)
		require.NoError(t, err)
		var progress []float64
		var types []string
		var final *client.Record
		for ev, err := range c.Events(ctx, rec.ID) {
			require.NoError(t, err)
			types = append(types, ev.Type)
			require.Nil(t, final, "no event after the final one")
			switch {
			case ev.Final():
				require.Equal(t, "reply", ev.Type)
				final, err = ev.Record()
				require.NoError(t, err)
			case ev.Type == "progress":
				var ce struct {
					Data struct {
						Progress float64 `json:"progress"`
					} `json:"data"`
					CorrelationID string `json:"correlationid"`
				}
				require.NoError(t, json.Unmarshal(ev.Data, &ce))
				require.Equal(t, rec.ID.String(), ce.CorrelationID)
				progress = append(progress, ce.Data.Progress)
			}
		}
		require.Equal(t, progressSteps, progress, "every progress event, in order; events: %v", types)
		require.NotNil(t, final, "the stream ends with the reply event; events: %v", types)
		require.Equal(t, client.StatusReplied, final.Status)
		require.JSONEq(t, `{"done": true}`, string(final.Reply.Body))
	})

	t.Run("Cancel", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		rec, err := c.Submit(ctx, "client.hold", map[string]any{}, nil)
		require.NoError(t, err)
		cancelled, err := c.Cancel(ctx, rec.ID)
		require.NoError(t, err)
		require.Equal(t, client.StatusCancelled, cancelled.Status)
		final, err := c.Wait(ctx, rec.ID, 5*time.Second)
		require.NoError(t, err, "a cancelled request has ended")
		require.Equal(t, client.StatusCancelled, final.Status)

		// A request that replied cannot be cancelled.
		done, err := c.Do(ctx, "client.echo", 1, &client.SubmitOptions{Wait: 20 * time.Second})
		require.NoError(t, err)
		_, err = c.Cancel(ctx, done.ID)
		require.True(t, client.IsConflict(err), "%v", err)
		e, ok := client.AsError(err)
		require.True(t, ok)
		require.Equal(t, "not-cancellable", e.Kind())
	})

	// The served gateway (cmd/switchboard serve) keeps a body over 1 MiB
	// by claim check; the client reads it back.
	t.Run("ClaimCheck", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		body := json.RawMessage(`{"data": "` + strings.Repeat("0123456789", 150_000) + `"}`)
		rec, err := c.Submit(ctx, "client.hold", body, nil)
		require.NoError(t, err)
		cl, ok := client.ClaimOf(rec.Request)
		require.True(t, ok, "the record holds a claim: %.200s", rec.Request)
		require.EqualValues(t, len(body), cl.Size)
		require.Equal(t, "/v1/blobs/"+rec.ID.String(), cl.URL)
		rc, err := c.OpenBlob(ctx, cl)
		require.NoError(t, err)
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		require.Equal(t, []byte(body), got)

		cl.SHA256 = strings.Repeat("0", 64)
		rc, err = c.OpenBlob(ctx, cl)
		require.NoError(t, err)
		_, err = io.ReadAll(rc)
		require.ErrorIs(t, err, client.ErrClaimMismatch)
		_, ok = client.ClaimOf(json.RawMessage(`{"small": true}`))
		require.False(t, ok)
		_, err = c.OpenBlob(ctx, client.Claim{URL: "https://elsewhere.example/v1/blobs/x"})
		require.Error(t, err, "the key goes to no other host")
	})

	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		unknown := uuid.New()

		_, err := c.Get(ctx, unknown)
		require.True(t, client.IsNotFound(err), "%v", err)
		e, ok := client.AsError(err)
		require.True(t, ok)
		require.Equal(t, http.StatusNotFound, e.Status)
		require.Equal(t, "urn:switchboard:problem:not-found", e.Type)
		require.Equal(t, "not-found", e.Kind())
		require.False(t, e.Temporary())

		_, err = c.Wait(ctx, unknown, 5*time.Second)
		require.True(t, client.IsNotFound(err), "Wait does not retry a 404: %v", err)

		_, err = c.Submit(ctx, "client.echo", 1, &client.SubmitOptions{ReplyTo: "not a url"})
		require.True(t, client.IsInvalid(err), "%v", err)
		e, _ = client.AsError(err)
		require.Equal(t, http.StatusBadRequest, e.Status)
		require.Equal(t, "invalid-header", e.Kind())
		require.NotEmpty(t, e.Detail)

		_, err = c.Submit(ctx, "nobody.listens", 1, nil)
		require.True(t, client.IsUnroutable(err), "%v", err)
		require.False(t, client.IsTemporary(err), "an unroutable submit is not retried")
	})

	t.Run("WaitRetries503", func(t *testing.T) {
		t.Parallel()
		target, err := url.Parse(base)
		require.NoError(t, err)
		proxy := httputil.NewSingleHostReverseProxy(target)
		var calls, unavailable atomic.Int32
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/requests/") && calls.Add(1) == 1 {
				unavailable.Add(1)
				w.Header().Set("Content-Type", "application/problem+json")
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"type":"urn:switchboard:problem:unavailable","title":"Service unavailable","status":503,"detail":"the database cannot be reached"}`)
				return
			}
			proxy.ServeHTTP(w, r)
		}))
		t.Cleanup(front.Close)
		fc, err := client.New(front.URL)
		require.NoError(t, err)

		rec, err := fc.Submit(t.Context(), "client.echo", "retry", nil)
		require.NoError(t, err)
		start := time.Now()
		final, err := fc.Wait(t.Context(), rec.ID, 20*time.Second)
		require.NoError(t, err)
		require.Equal(t, client.StatusReplied, final.Status)
		require.Equal(t, int32(1), unavailable.Load(), "the first poll was answered 503")
		require.GreaterOrEqual(t, calls.Load(), int32(2), "Wait polled again after the 503")
		require.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond, "Retry-After: 1 was honoured")
	})
}

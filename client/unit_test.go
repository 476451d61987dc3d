package client_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/client"
)

func TestNew(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8080", true},
		{"https://gw.example/prefix/", true},
		{"127.0.0.1:8080", false},
		{"ftp://host", false},
		{"http://", false},
		{"http://host/?q=1", false},
		{"http://user:pw@host", false},
	} {
		_, err := client.New(tc.url)
		require.Equal(t, tc.ok, err == nil, "%s: %v", tc.url, err)
	}
}

// TestSubmitWire checks what Submit sends: the path, the headers and the
// body as given, under a base URL with a path prefix.
func TestSubmitWire(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, http.MethodPost, r.Method)
		require.Equal(t, "/gw/workflow/create", r.URL.EscapedPath())
		require.Equal(t, "Bearer sb_test", r.Header.Get("Authorization"))
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
		require.Equal(t, "0190f3c2-5d1e-7c4a-9b2e-3f4a5b6c7d8e", r.Header.Get("Message-ID"))
		require.Equal(t, "1552959300136", r.Header.Get("Time"))
		require.Equal(t, "2", r.Header.Get("Request-Timeout"), "1.5 s rounds up")
		require.Equal(t, "wait=5", r.Header.Get("Prefer"))
		body, _ := io.ReadAll(r.Body)
		require.Equal(t, `{"a":1}`, string(body), "a []byte body goes as is")
		w.Header().Set("Read-Token", "tok")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"id":"0190f3c2-5d1e-7c4a-9b2e-3f4a5b6c7d8e","routing_key":"workflow.create","status":"pending","time":1552959300136,"expires_at":1552959302136,"reply_to":null,"request":{"a":1},"reply":null}`)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL+"/gw/", client.WithKey("sb_test"), client.WithHTTPClient(srv.Client()))
	require.NoError(t, err)
	o := &client.SubmitOptions{Time: 1552959300136, Timeout: 1500e6, Wait: 5e9}
	copy(o.MessageID[:], []byte{0x01, 0x90, 0xf3, 0xc2, 0x5d, 0x1e, 0x7c, 0x4a, 0x9b, 0x2e, 0x3f, 0x4a, 0x5b, 0x6c, 0x7d, 0x8e})
	rec, err := c.Submit(t.Context(), "workflow.create", []byte(`{"a":1}`), o)
	require.NoError(t, err)
	require.Equal(t, "tok", rec.ReadToken)
	require.Equal(t, client.StatusPending, rec.Status)
	require.False(t, rec.Terminal())

	for _, bad := range []string{"", "a..b", ".a", "a."} {
		_, err := c.Submit(t.Context(), bad, 1, nil)
		require.Error(t, err, "routing key %q", bad)
	}
}

// TestSubmitGatherWire checks Expect-Replies as Submit sends it, and a
// gathered record as it reads it.
func TestSubmitGatherWire(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":"0190f3c2-5d1e-7c4a-9b2e-3f4a5b6c7d8e","routing_key":"a.b","status":"partial",`+
			`"time":1,"expires_at":2,"reply_to":null,"request":{},"reply":{"message_id":"m","correlation_id":"c","time":1,"body":{"n":1}},`+
			`"replies_expected":3,"replies":[{"message_id":"m","correlation_id":"c","time":1,"body":{"n":1},"from":"alpha","status":"ok"}]}`)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithHTTPClient(srv.Client()))
	require.NoError(t, err)
	for _, tc := range []struct {
		expect int
		header string
	}{{0, ""}, {1, "1"}, {3, "3"}, {client.ExpectAll, "all"}} {
		var got string
		hc := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			got = r.Header.Get("Expect-Replies")
			return srv.Client().Transport.RoundTrip(r)
		})}
		c, err := client.New(srv.URL, client.WithHTTPClient(hc))
		require.NoError(t, err)
		_, err = c.Submit(t.Context(), "a.b", 1, &client.SubmitOptions{ExpectReplies: tc.expect})
		require.NoError(t, err)
		require.Equal(t, tc.header, got, "ExpectReplies %d", tc.expect)
	}
	rec, err := c.Submit(t.Context(), "a.b", 1, nil)
	require.NoError(t, err)
	require.True(t, rec.Terminal(), "partial is terminal")
	require.Equal(t, 3, *rec.RepliesExpected)
	require.Len(t, rec.Replies, 1)
	require.Equal(t, "alpha", rec.Replies[0].From)
	require.Equal(t, "ok", rec.Replies[0].Status)
	require.JSONEq(t, `{"n":1}`, string(rec.Replies[0].Body))
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestErrorFromPlainAnswer checks an error answer that is no problem, as a
// proxy in front of the gateway may give.
func TestErrorFromPlainAnswer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "upstream down", http.StatusBadGateway)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL)
	require.NoError(t, err)
	_, err = c.Get(t.Context(), [16]byte{1})
	e, ok := client.AsError(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, http.StatusBadGateway, e.Status)
	require.Empty(t, e.Kind())
	require.Equal(t, "upstream down", e.Detail)
	require.Equal(t, 7e9, float64(e.RetryAfter))
	require.True(t, client.IsTemporary(err))
}

// The SDK is what services import: it needs the standard library, uuid,
// the signature package and the claim check's wire form, not the gateway's
// database, broker or metrics libraries.
func TestSDKDependenciesAreFew(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	require.NoError(t, err)
	deps := strings.Fields(string(out))
	require.ElementsMatch(t, []string{
		"github.com/google/uuid",
		"github.com/switchboard-gw/switchboard/client",
		// The claim check's wire form and verification, shared with the
		// responder SDK; standard library only (its own imports would be
		// listed here too).
		"github.com/switchboard-gw/switchboard/internal/claim",
		"github.com/switchboard-gw/switchboard/webhook/signature",
	}, deps)
}

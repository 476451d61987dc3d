package responder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

func TestClaimsAreFetchedAndChecked(t *testing.T) {
	t.Parallel()
	content := []byte(`{"big": "enough"}`)
	sum := sha256.Sum256(content)
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		switch r.URL.Path {
		case "/v1/blobs/good":
			_, _ = w.Write(content)
		case "/v1/blobs/chunked": // no Content-Length: checked at the end
			w.(http.Flusher).Flush()
			_, _ = w.Write(content)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	f := &claimFetcher{base: srv.URL, apiKey: "sb_key", client: srv.Client()}
	ctx := context.Background()
	good := Claim{URL: "/v1/blobs/good", Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:])}

	body, err := f.resolve(ctx, good)
	require.NoError(t, err)
	require.Equal(t, content, body)
	require.Equal(t, "Bearer sb_key", auth)

	chunked := good
	chunked.URL = "/v1/blobs/chunked"
	body, err = f.resolve(ctx, chunked)
	require.NoError(t, err)
	require.Equal(t, content, body)

	for name, c := range map[string]Claim{
		"wrong digest":          {URL: "/v1/blobs/chunked", Size: good.Size, SHA256: hex.EncodeToString(make([]byte, 32))},
		"wrong size":            {URL: "/v1/blobs/good", Size: good.Size + 1, SHA256: good.SHA256},
		"wrong size, streamed":  {URL: "/v1/blobs/chunked", Size: good.Size - 1, SHA256: good.SHA256},
		"not found (permanent)": {URL: "/v1/blobs/gone", Size: 1, SHA256: good.SHA256},
	} {
		_, err := f.resolve(ctx, c)
		require.True(t, permanent(err), "%s: %v", name, err)
		if name != "not found (permanent)" {
			require.ErrorIs(t, err, ErrClaimMismatch, name)
		}
	}

	// A gateway that cannot be reached is not permanent: the request is requeued.
	down := &claimFetcher{base: "http://127.0.0.1:1", client: srv.Client()}
	_, err = down.resolve(ctx, good)
	require.Error(t, err)
	require.False(t, permanent(err))
	// No gateway configured is permanent.
	_, err = (&claimFetcher{client: srv.Client()}).resolve(ctx, good)
	require.True(t, permanent(err))

	// Open streams an inline body as it is, and a claim from the gateway.
	rc, err := Request{Body: content}.Open(ctx)
	require.NoError(t, err)
	got, _ := io.ReadAll(rc)
	require.Equal(t, content, got)
	rc, err = Request{Body: []byte(`{"claim": {}}`), Claim: &good, claims: f}.Open(ctx)
	require.NoError(t, err)
	got, err = io.ReadAll(rc)
	require.NoError(t, err)
	require.Equal(t, content, got)
}

func TestIsClaim(t *testing.T) {
	t.Parallel()
	for v, want := range map[any]bool{int32(1): true, int64(1): true, "1": true, true: true, int32(0): false, "no": false, nil: false} {
		require.Equal(t, want, isClaim(amqp.Table{"switchboard-claim": v}), "%#v", v)
	}
	require.False(t, isClaim(nil))
}

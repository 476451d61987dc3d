package client_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/client"
)

// TestEventsResume drops the stream after the first event and checks that
// Events reconnects with Last-Event-ID, yields each event once, and ends
// after the final event.
func TestEventsResume(t *testing.T) {
	t.Parallel()
	id := uuid.New()
	var mu sync.Mutex
	var lastIDs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/v1/requests/"+id.String()+"/events", r.URL.Path)
		require.Equal(t, "text/event-stream", r.Header.Get("Accept"))
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		switch r.Header.Get("Last-Event-ID") {
		case "":
			// One event, a comment, then the connection drops.
			_, _ = io.WriteString(w, ": keep-alive\n\nid: 1\nevent: progress\ndata: {\"n\":1}\n\n")
		case "1":
			_, _ = io.WriteString(w, "id: 2\nevent: progress\ndata: {\"n\":\ndata: 2}\n\n")
			_, _ = fmt.Fprintf(w, "id: final\nevent: reply\ndata: {\"id\":%q,\"status\":\"replied\"}\n\n", id)
			_, _ = io.WriteString(w, "id: 3\nevent: progress\ndata: {\"n\":3}\n\n") // never read
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL)
	require.NoError(t, err)

	var got []client.Event
	for ev, err := range c.Events(t.Context(), id) {
		require.NoError(t, err)
		got = append(got, ev)
	}
	require.Len(t, got, 3)
	require.Equal(t, client.Event{ID: "1", Type: "progress", Data: []byte(`{"n":1}`)}, got[0])
	require.Equal(t, client.Event{ID: "2", Type: "progress", Data: []byte("{\"n\":\n2}")}, got[1])
	require.True(t, got[2].Final())
	rec, err := got[2].Record()
	require.NoError(t, err)
	require.Equal(t, id, rec.ID)
	require.Equal(t, client.StatusReplied, rec.Status)
	require.Equal(t, []string{"", "1"}, lastIDs)
}

// TestEventsGivesUp checks that a stream failing every time ends the
// sequence with the error after a few tries, and that a non-temporary
// error ends it at once.
func TestEventsGivesUp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		status    int
		wantCalls int
	}{
		{"not found", http.StatusNotFound, 1},
		{"unavailable", http.StatusServiceUnavailable, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			calls := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls++
				mu.Unlock()
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(tc.status)
				_, _ = fmt.Fprintf(w, `{"type":"urn:switchboard:problem:x","title":"x","status":%d}`, tc.status)
			}))
			t.Cleanup(srv.Close)
			c, err := client.New(srv.URL)
			require.NoError(t, err)
			var errs []error
			for ev, err := range c.Events(t.Context(), uuid.New()) {
				require.Error(t, err, "no event: %+v", ev)
				errs = append(errs, err)
			}
			require.Len(t, errs, 1)
			e, ok := client.AsError(errs[0])
			require.True(t, ok, "%v", errs[0])
			require.Equal(t, tc.status, e.Status)
			require.Equal(t, tc.wantCalls, calls)
		})
	}
}

// TestBreakClosesStream checks that leaving the loop early stops the
// sequence without an error.
func TestBreakClosesStream(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "id: 1\nevent: progress\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL)
	require.NoError(t, err)
	n := 0
	for _, err := range c.Events(t.Context(), uuid.New()) {
		require.NoError(t, err)
		n++
		break
	}
	require.Equal(t, 1, n)
}

package rules

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHookEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		target          string
		headers         map[string]string
		body            string
		id, typ, source string
		data            string
		idIsUUID        bool
		subject         string
	}{
		{name: "plain JSON with an idempotency key", target: "/hooks/archive",
			headers: map[string]string{"Idempotency-Key": "k-1", "Event-Type": "ingestion-complete"},
			body:    `{"instrument":"VLA"}`, id: "k-1", typ: "ingestion-complete", source: "hook:archive", data: `{"instrument":"VLA"}`},
		{name: "Event-ID, type from the query", target: "/hooks/archive?type=ingestion-complete",
			headers: map[string]string{"Event-ID": "e-9"},
			body:    `[1,2]`, id: "e-9", typ: "ingestion-complete", source: "hook:archive", data: `[1,2]`},
		{name: "nothing given: new id, the source's name as type", target: "/hooks/archive",
			body: `{}`, typ: "archive", source: "hook:archive", data: `{}`, idIsUUID: true},
		{name: "structured CloudEvent as is", target: "/hooks/archive?type=ignored",
			headers: map[string]string{"Idempotency-Key": "ignored"},
			body:    `{"specversion":"1.0","id":"ce","source":"archive.nrao","type":"ingestion-complete","subject":"s","data":{"x":1}}`,
			id:      "ce", typ: "ingestion-complete", source: "archive.nrao", data: `{"x":1}`, subject: "s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("POST", tc.target, strings.NewReader(tc.body))
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			ev := hookEvent("archive", r, []byte(tc.body))
			if tc.idIsUUID {
				require.Len(t, ev.ID, 36)
			} else {
				require.Equal(t, tc.id, ev.ID)
			}
			require.Equal(t, tc.typ, ev.Type)
			require.Equal(t, tc.source, ev.Source)
			require.Equal(t, tc.subject, ev.Subject)
			require.JSONEq(t, tc.data, string(ev.Data))
			require.WithinDuration(t, time.Now(), ev.Time, time.Minute)
		})
	}
}

func TestHookReceiverDeliver(t *testing.T) {
	t.Parallel()
	s := NewHookSource("archive", HookSource{})
	require.ErrorIs(t, s.Deliver(context.Background(), Event{ID: "1"}), ErrSourceStopped)
	got := make(chan Event, 1)
	stop := runSource(t, s, func(_ context.Context, ev Event) error { got <- ev; return nil })
	require.Eventually(t, func() bool { return s.Deliver(context.Background(), Event{ID: "2"}) == nil }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, "2", (<-got).ID)
	stop()
	require.ErrorIs(t, s.Deliver(context.Background(), Event{ID: "3"}), ErrSourceStopped)
}

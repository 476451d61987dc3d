package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/responder"
)

// sseEvent is one Server-Sent Event as a client parses it.
type sseEvent struct {
	id, event, data string
}

// openStream GETs path as an event stream and returns its events on a
// channel, closed when the server ends the stream.
func (b *bundle) openStream(t *testing.T, path string, headers map[string]string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", b.url+path, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := b.http.Do(req)
	require.NoError(t, err)
	out := make(chan sseEvent, 64)
	go func() {
		defer close(out)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if len(data) > 0 || ev.event != "" {
					ev.data = strings.Join(data, "\n")
					out <- ev
				}
				ev, data = sseEvent{}, nil
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id:"):
				ev.id = strings.TrimPrefix(strings.TrimPrefix(line, "id:"), " ")
			case strings.HasPrefix(line, "event:"):
				ev.event = strings.TrimPrefix(strings.TrimPrefix(line, "event:"), " ")
			case strings.HasPrefix(line, "data:"):
				data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
			}
		}
	}()
	return res, out
}

// collect reads a stream to its end.
func collect(t *testing.T, events <-chan sseEvent) []sseEvent {
	t.Helper()
	var got []sseEvent
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return got
			}
			got = append(got, ev)
		case <-timeout:
			t.Fatalf("the stream did not end; got %+v", got)
		}
	}
}

func progressMessages(t *testing.T, evs []sseEvent) ([]string, []string) {
	t.Helper()
	var msgs, ids []string
	for _, ev := range evs {
		if ev.event != "progress" {
			continue
		}
		var ce struct {
			Type          string `json:"type"`
			CorrelationID string `json:"correlationid"`
			Data          struct {
				Progress float64 `json:"progress"`
				Message  string  `json:"message"`
			} `json:"data"`
		}
		require.NoError(t, json.Unmarshal([]byte(ev.data), &ce), ev.data)
		msgs = append(msgs, ce.Data.Message)
		ids = append(ids, ev.id)
	}
	return msgs, ids
}

// A worker publishes three progress events and then its reply; a stream
// opened right after the submit gets the three, in order, then the reply,
// then its end; one resumed after the second progress event gets exactly
// what followed it; one resumed after the end is told there is no more.
func TestProgressStreamsThenTheReply(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.responder(t, "calibrate", func(ctx context.Context, req responder.Request) (any, error) {
		for i, msg := range []string{"step 1", "step 2", "step 3"} {
			if err := responder.Progress(ctx, float64(i+1)/4, msg); err != nil {
				return nil, err
			}
			time.Sleep(50 * time.Millisecond)
		}
		return map[string]string{"result": "calibrated"}, nil
	}, "calibrate.#")

	res := b.do(t, "POST", "/calibrate/now", jsonCT, `{"target": "VLA"}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	id := res.header.Get("Message-ID")

	stream, evs := b.openStream(t, "/v1/requests/"+id+"/events", nil)
	require.Equal(t, 200, stream.StatusCode)
	require.Equal(t, "text/event-stream", stream.Header.Get("Content-Type"))
	got := collect(t, evs)
	msgs, ids := progressMessages(t, got)
	require.Equal(t, []string{"step 1", "step 2", "step 3"}, msgs)
	last := got[len(got)-1]
	require.Equal(t, "reply", last.event)
	require.Equal(t, "final", last.id)
	var rec map[string]any
	require.NoError(t, json.Unmarshal([]byte(last.data), &rec))
	require.Equal(t, "replied", rec["status"])
	require.Equal(t, "calibrated", rec["reply"].(map[string]any)["body"].(map[string]any)["result"])
	// Every event comes before the reply, in increasing id order.
	types := []string{}
	for _, ev := range got[:len(got)-1] {
		types = append(types, ev.event)
	}
	require.Contains(t, types, "request.replied", "the gateway's own events are in the history too")

	// Resume after the second progress event.
	_, evs = b.openStream(t, "/v1/requests/"+id+"/events", map[string]string{"Last-Event-ID": ids[1]})
	resumed := collect(t, evs)
	msgs, _ = progressMessages(t, resumed)
	require.Equal(t, []string{"step 3"}, msgs, "exactly what followed the second event")
	require.Equal(t, "reply", resumed[len(resumed)-1].event)

	// Resume after the end: 204, which tells EventSource to stop.
	end, _ := b.openStream(t, "/v1/requests/"+id+"/events", map[string]string{"Last-Event-ID": "final"})
	require.Equal(t, http.StatusNoContent, end.StatusCode)

	// The same history as JSON.
	hist := b.do(t, "GET", "/v1/requests/"+id+"/events", map[string]string{"Accept": "application/json"}, "")
	require.Equal(t, 200, hist.status, "body: %s", hist.body)
	var view struct {
		Events []json.RawMessage `json:"events"`
		Record map[string]any    `json:"record"`
	}
	require.NoError(t, json.Unmarshal(hist.body, &view))
	require.Equal(t, "replied", view.Record["status"])
	n := 0
	for _, e := range view.Events {
		if strings.Contains(string(e), `"type":"progress"`) {
			n++
		}
	}
	require.Equal(t, 3, n)
}

// A service that speaks only HTTP posts progress; it is in the history and
// on the events exchange.
func TestPostedEventsAreStoredAndPublished(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	ch, q := b.events(t, "progress", "progress.#")
	id := b.open(t, nil)

	res := b.do(t, "POST", "/v1/requests/"+id+"/events", jsonCT, `{"state": "running", "progress": 0.4, "message": "calibrating"}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	ev := res.json(t)["event"].(map[string]any)
	require.Equal(t, "progress", ev["type"])
	require.Equal(t, id, ev["correlationid"])
	require.Equal(t, "calibrating", ev["data"].(map[string]any)["message"])

	d := getOne(t, ch, q)
	require.Equal(t, "progress.open.request", d.RoutingKey)
	require.Contains(t, string(d.Body), `"calibrating"`)

	hist := b.do(t, "GET", "/v1/requests/"+id+"/events", nil, "")
	require.Equal(t, 200, hist.status)
	require.Contains(t, string(hist.body), `"calibrating"`)

	// A CloudEvent is taken as it is; the same source and id twice is 409.
	ce := `{"specversion": "1.0", "id": "evt-1", "source": "calibrator", "type": "request.received", "data": {}}`
	require.Equal(t, 202, b.do(t, "POST", "/v1/requests/"+id+"/events", jsonCT, ce).status)
	requireProblem(t, b.do(t, "POST", "/v1/requests/"+id+"/events", jsonCT, ce), 409, "event-duplicate")
	requireProblem(t, b.do(t, "POST", "/v1/requests/"+id+"/events", jsonCT, `{"specversion": "0.3"}`), 400, "invalid-json")
	requireProblem(t, b.do(t, "POST", "/v1/requests/0190f3c2-0000-7000-8000-000000000000/events", jsonCT, `{}`), 404, "not-found")
}

// Topic subscriptions stream live events matching an AMQP pattern.
func TestTopicSubscription(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.echo(t, "echo", "watched.#")
	res, evs := b.openStream(t, "/v1/events?topic=request.replied.watched.%23", nil)
	require.Equal(t, 200, res.StatusCode)
	require.Eventually(t, func() bool { return b.live.Count() == 1 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // the instance's live queue is declared once someone listens

	sub := b.do(t, "POST", "/watched/thing", jsonCT, `{}`)
	require.Equal(t, 202, sub.status)
	id := sub.header.Get("Message-ID")
	select {
	case ev := <-evs:
		require.Equal(t, "request.replied", ev.event)
		require.Contains(t, ev.data, id)
	case <-time.After(10 * time.Second):
		t.Fatal("no event reached the subscriber")
	}

	requireProblem(t, b.do(t, "GET", "/v1/events?topic=a..b", nil, ""), 400, "invalid-parameter")
}

func TestListRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.echo(t, "echo", "list.#")
	var ids []string
	for range 3 {
		res := b.do(t, "POST", "/list/me", with(jsonCT, "Prefer", "wait=10"), `{}`)
		require.Equal(t, 200, res.status)
		ids = append(ids, res.header.Get("Message-ID"))
	}
	open := b.open(t, nil)

	page := b.do(t, "GET", "/v1/requests?status=replied&routing_key=list.%23&limit=2", nil, "")
	require.Equal(t, 200, page.status, "body: %s", page.body)
	var p struct {
		Requests []map[string]any `json:"requests"`
		Next     *string          `json:"next_before"`
	}
	require.NoError(t, json.Unmarshal(page.body, &p))
	require.Len(t, p.Requests, 2)
	require.Equal(t, ids[2], p.Requests[0]["id"], "newest first")
	require.NotNil(t, p.Next)
	page = b.do(t, "GET", "/v1/requests?status=replied&routing_key=list.me&before="+*p.Next, nil, "")
	require.NoError(t, json.Unmarshal(page.body, &p))
	require.Len(t, p.Requests, 1)
	require.Equal(t, ids[0], p.Requests[0]["id"])
	require.Nil(t, p.Next)

	page = b.do(t, "GET", "/v1/requests?status=pending", nil, "")
	require.NoError(t, json.Unmarshal(page.body, &p))
	require.Len(t, p.Requests, 1)
	require.Equal(t, open, p.Requests[0]["id"])

	requireProblem(t, b.do(t, "GET", "/v1/requests?status=nope", nil, ""), 400, "invalid-parameter")
	requireProblem(t, b.do(t, "GET", "/v1/requests?limit=0", nil, ""), 400, "invalid-parameter")
	requireProblem(t, b.do(t, "GET", "/v1/requests?routing_key=a..b", nil, ""), 400, "invalid-parameter")
}

// Browsers on an allowed origin may call the API and read its headers.
func TestCORS(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	pre := b.do(t, "OPTIONS", "/workflow/create", map[string]string{
		"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
		"Access-Control-Request-Headers": "content-type, prefer",
	}, "")
	require.Equal(t, 204, pre.status)
	require.Equal(t, "https://app.example.com", pre.header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, pre.header.Get("Access-Control-Allow-Methods"), "POST")

	b.bindQueue(t, "cors", "cors.#")
	res := b.do(t, "POST", "/cors/call", with(jsonCT, "Origin", "https://app.example.com"), `{}`)
	require.Equal(t, 202, res.status)
	require.Equal(t, "https://app.example.com", res.header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, res.header.Get("Access-Control-Expose-Headers"), "Message-ID")

	other := b.do(t, "POST", "/cors/call", with(jsonCT, "Origin", "https://evil.example.com"), `{}`)
	require.Empty(t, other.header.Get("Access-Control-Allow-Origin"))
}

// A message on the events exchange that is not an event is not dropped: it
// is dead-lettered and recorded.
func TestMalformedEventIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	id := b.open(t, nil)
	ch, _ := b.bindQueue(t, "publisher")
	require.NoError(t, ch.ExchangeDeclare(b.names.EventsExchange, "topic", true, false, false, false, nil))
	require.NoError(t, ch.PublishWithContext(context.Background(), b.names.EventsExchange, "progress.open.request", false, false,
		amqp.Publishing{CorrelationId: id, Body: []byte(`{"progress": 0.5`), ContentType: "application/json"}))
	require.Eventually(t, func() bool {
		return b.count(t, `SELECT count(*) FROM dead_letters WHERE correlation_id = $1 AND reason = 'rejected'`, id) == 1
	}, 10*time.Second, 20*time.Millisecond)
	hist := b.do(t, "GET", "/v1/requests/"+id+"/events", nil, "")
	require.NotContains(t, string(hist.body), `"type":"progress"`, "it is not in the history")
}

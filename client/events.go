package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"strings"

	"github.com/google/uuid"
)

// FinalEventID is the id of the last event of a stream, the reply event.
const FinalEventID = "final"

// eventTries is how many times in a row Events reconnects a stream that
// failed before it gives up.
const eventTries = 5

// maxEventLine bounds one line of the stream (a reply event carries the
// whole record).
const maxEventLine = 64 << 20

// Event is one Server-Sent Event of a request's stream.
type Event struct {
	ID   string // the event id; FinalEventID for the last one
	Type string // the CloudEvent type (e.g. progress), or reply for the last one
	// Data is the CloudEvent JSON, or for the last event the request's
	// final record.
	Data json.RawMessage
}

// Final reports whether e is the stream's last event, whose data is the
// request's final record.
func (e Event) Final() bool { return e.ID == FinalEventID }

// Record decodes the final event's data, the request's record.
func (e Event) Record() (*Record, error) {
	var r Record
	if err := json.Unmarshal(e.Data, &r); err != nil {
		return nil, fmt.Errorf("client: event %s: decode record: %w", e.ID, err)
	}
	return &r, nil
}

// Events follows the request's events as Server-Sent Events: those stored
// already, then each new one as it comes, then the final event (Type
// reply, ID FinalEventID) with the request's final record, where the
// sequence ends. A dropped stream is resumed where it broke (Last-Event-ID),
// up to a few times in a row; an error that ends the sequence is yielded
// with a zero Event. Breaking out of the loop closes the stream.
func (c *Client) Events(ctx context.Context, id uuid.UUID) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		var lastID string
		var backoff = backoffMin / 2
		failures := 0
		for {
			got, done, err := c.stream(ctx, id, lastID, yield)
			if got != "" {
				lastID, failures, backoff = got, 0, backoffMin/2
			}
			if done {
				return
			}
			if err == nil {
				err = errors.New("the stream ended before the final event")
			}
			if ctx.Err() != nil {
				yield(Event{}, fmt.Errorf("events %s: %w", id, ctx.Err()))
				return
			}
			failures++
			if failures >= eventTries || !IsTemporary(err) {
				yield(Event{}, fmt.Errorf("events %s: %w", id, err))
				return
			}
			backoff = nextBackoff(backoff, err)
			if err := sleep(ctx, backoff); err != nil {
				yield(Event{}, fmt.Errorf("events %s: %w", id, err))
				return
			}
		}
	}
}

// errStreamBroken marks a stream that broke off; it is temporary.
var errStreamBroken = errors.New("client: event stream broken")

// stream reads one connection of the stream, after lastID when it is set,
// yielding its events. It answers the id of the last event yielded (""
// when none), whether the sequence is over (final event, 204, or the
// consumer stopped), and why the connection ended otherwise.
func (c *Client) stream(ctx context.Context, id uuid.UUID, lastID string, yield func(Event, error) bool) (string, bool, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/requests/"+id.String()+"/events", nil, nil)
	if err != nil {
		yield(Event{}, err)
		return "", true, nil
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return "", false, err
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent:
		// Resumed after the final event: nothing more will come.
		return "", true, nil
	default:
		return "", false, readError(res)
	}

	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	var seen string
	var ev Event
	var data bytes.Buffer
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			// A blank line dispatches the event, if it has data.
			if data.Len() > 0 {
				if ev.Type == "" {
					ev.Type = "message"
				}
				ev.Data = json.RawMessage(bytes.Clone(bytes.TrimSuffix(data.Bytes(), []byte("\n"))))
				if ev.ID != "" {
					seen = ev.ID
				}
				if !yield(ev, nil) {
					return seen, true, nil
				}
				if ev.Final() {
					return seen, true, nil
				}
			}
			ev.Type, ev.Data = "", nil
			data.Reset()
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "": // a comment, e.g. the keep-alive
		case "id":
			if !strings.ContainsRune(value, 0) {
				ev.ID = value
			}
		case "event":
			ev.Type = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return seen, false, fmt.Errorf("%w: %w", errStreamBroken, err)
	}
	return seen, false, errStreamBroken
}

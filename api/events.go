package api

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/events"
)

// History is what the handlers need from the event history.
type History interface {
	After(ctx context.Context, id uuid.UUID, after int64, limit int) ([]events.Stored, error)
	Watch(id uuid.UUID) (<-chan struct{}, func())
	AppendAndPublish(ctx context.Context, in events.Incoming, routingKey string) (events.Stored, error)
}

// Events turns on the publish-subscribe endpoints (CONTRACT §5).
type Events struct {
	History History
	Live    *events.Hub
	// Heartbeat is how often an idle stream gets a comment, so proxies do
	// not close it.
	Heartbeat time.Duration
	// Settle bounds how long a stream whose request has ended waits for the
	// gateway's own request.<status> event to reach the history (it follows
	// every event the responder published before its reply).
	Settle time.Duration
	// Wake nudges the event relay after an event was queued for publishing.
	Wake func()
}

// SetEvents turns the event endpoints on; call it before Handler.
func (s *Server) SetEvents(e Events) {
	if e.Heartbeat <= 0 {
		e.Heartbeat = 15 * time.Second
	}
	if e.Settle <= 0 {
		e.Settle = 2 * time.Second
	}
	s.events = e
}

// finalEventID is the SSE id of a stream's last event; a reconnect with it
// gets 204, which tells EventSource to stop.
const finalEventID = "final"

// historyPage bounds the events read at once.
const historyPage = 500

func wantsEventStream(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && mt == "text/event-stream" {
			return true
		}
	}
	return false
}

// eventsView is the JSON answer of GET /v1/requests/{id}/events.
type eventsView struct {
	RequestID string            `json:"request_id"`
	Events    []json.RawMessage `json:"events"`
	// LastEventID is the seq of the last event listed: pass it as ?after=
	// for the next page.
	LastEventID int64      `json:"last_event_id"`
	Record      recordJSON `json:"record"`
}

// historyOf reads the {id} of an event history route and who owns it;
// false when it has answered (a malformed id, no history kept, or a request
// the caller may not see).
func (s *Server) historyOf(w http.ResponseWriter, r *http.Request) (uuid.UUID, correlation.Owner, bool) {
	id, err := parseUUID(chi.URLParam(r, "id"))
	if err != nil {
		writeProblem(w, errNotFound("no request has this id: request ids are UUIDs"))
		return uuid.Nil, correlation.Owner{}, false
	}
	setRequestID(r.Context(), id)
	if s.events.History == nil {
		writeProblem(w, errNotFound("this gateway keeps no event history"))
		return uuid.Nil, correlation.Owner{}, false
	}
	owner, ok := s.visible(w, r, id)
	if !ok {
		return uuid.Nil, correlation.Owner{}, false
	}
	return id, owner, true
}

// requestEvents handles GET /v1/requests/{id}/events: the request's event
// history as JSON, or as a Server-Sent Events stream: history, then live
// events, then the final record, then the end.
func (s *Server) requestEvents(w http.ResponseWriter, r *http.Request) {
	id, _, ok := s.historyOf(w, r)
	if !ok {
		return
	}
	rec, err := s.records.Get(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	stream := wantsEventStream(r)
	after, p := s.resumeFrom(r, stream)
	if p != nil {
		writeProblem(w, p)
		return
	}
	if !stream {
		evs, err := s.events.History.After(r.Context(), id, after, 1000)
		if err != nil {
			writeError(w, err)
			return
		}
		out := eventsView{RequestID: id.String(), Events: []json.RawMessage{}, LastEventID: after, Record: s.render(r.Context(), rec)}
		for _, e := range evs {
			out.Events = append(out.Events, e.Event)
			out.LastEventID = e.Seq
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	if after < 0 {
		w.WriteHeader(http.StatusNoContent) // the stream ended before: stop reconnecting
		return
	}
	release, ok := s.holdWaiter(w, r)
	if !ok {
		return
	}
	defer release()
	defer s.streamOpened()()
	s.streamRequest(w, r, rec, after)
}

// resumeFrom reads where a client resumes: Last-Event-ID (sent by
// EventSource on reconnect) or ?after=. -1 means after the final event.
func (s *Server) resumeFrom(r *http.Request, stream bool) (int64, *Problem) {
	v := r.Header.Get("Last-Event-ID")
	what := "Last-Event-ID"
	if v == "" {
		v, what = r.URL.Query().Get("after"), "after"
	}
	switch {
	case v == "":
		return 0, nil
	case v == finalEventID && stream:
		return -1, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		if what == "after" {
			return 0, errInvalidParameter("after must be an event id (a whole number)")
		}
		return 0, errInvalidHeader("Last-Event-ID must be an event id from this stream")
	}
	return n, nil
}

// streamRequest writes the SSE stream of one request.
func (s *Server) streamRequest(w http.ResponseWriter, r *http.Request, rec correlation.Request, after int64) {
	ctx := r.Context()
	id := rec.ID
	// Watch before the first read, so nothing stored in between is missed.
	changed, stop := s.events.History.Watch(id)
	defer stop()
	sse, err := events.NewSSEWriter(w)
	if err != nil {
		writeProblem(w, problem(http.StatusInternalServerError, "internal", "Internal error", "streaming is not supported here"))
		return
	}

	ended := make(chan correlation.Request, 1)
	if rec.Status.Terminal() {
		ended <- rec
	} else {
		go func() {
			for ctx.Err() == nil {
				got, err := s.records.Wait(ctx, id, time.Hour)
				if err == nil && got.Status.Terminal() {
					ended <- got
					return
				}
				if err != nil && ctx.Err() == nil {
					time.Sleep(time.Second) // Postgres away: try again
				}
			}
		}()
	}
	heartbeat := time.NewTicker(s.events.Heartbeat)
	defer heartbeat.Stop()

	var final *correlation.Request
	var settle <-chan time.Time
	sawEnd := false
	drain := func() bool {
		for {
			evs, err := s.events.History.After(ctx, id, after, historyPage)
			if err != nil {
				s.logger.WarnContext(ctx, "read event history", "request_id", id, "error", err)
				return false
			}
			for _, e := range evs {
				if err := sse.Event(strconv.FormatInt(e.Seq, 10), e.Type, e.Event); err != nil {
					return false
				}
				after = e.Seq
				if final != nil && e.Type == "request."+string(final.Status) {
					sawEnd = true
				}
			}
			if len(evs) < historyPage {
				return true
			}
		}
	}
	for {
		if !drain() {
			return
		}
		if final != nil && sawEnd {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-s.draining.Done():
			return // shutting down: the client reconnects to another instance
		case <-changed:
		case <-heartbeat.C:
			if err := sse.Comment("keep-alive"); err != nil {
				return
			}
		case got := <-ended:
			final = &got
			settle = time.After(s.events.Settle)
		case <-settle:
			sawEnd = true // the lifecycle event is off, or late: end anyway
		}
	}
	body, err := json.Marshal(s.render(ctx, *final))
	if err != nil {
		return
	}
	if err := sse.Event(finalEventID, "reply", body); err == nil && replied(*final) {
		s.gw.ReplyRead(id)
	}
}

// postEvent handles POST /v1/requests/{id}/events: an event from a service
// that speaks only HTTP. The body is a structured-mode CloudEvent, or any
// JSON object, which becomes the data of a progress event. It is stored in
// the request's history and published on the events exchange.
func (s *Server) postEvent(w http.ResponseWriter, r *http.Request) {
	id, owner, ok := s.historyOf(w, r)
	if !ok || !s.mayChange(w, r, owner) {
		return
	}
	body, p := s.readJSONBody(w, r)
	if p != nil {
		writeProblem(w, p)
		return
	}
	var probe struct {
		SpecVersion *string `json:"specversion"`
	}
	_ = json.Unmarshal(body, &probe)
	var in events.Incoming
	var err error
	if probe.SpecVersion != nil {
		ev, err := events.Parse(body)
		if err == nil && ev.CorrelationID != "" && ev.CorrelationID != id.String() {
			err = errors.New("its correlationid names another request")
		}
		if err != nil {
			writeProblem(w, errInvalidJSON("the body is a CloudEvent the gateway cannot take: "+err.Error()))
			return
		}
		in, _, err = events.New(id, ev)
		if err != nil {
			writeProblem(w, errInvalidJSON(err.Error()))
			return
		}
	} else {
		in, _, err = events.New(id, events.CloudEvent{
			SpecVersion: "1.0", ID: s.newID().String(), Source: "switchboard/http", Type: "progress",
			Time: s.now().UTC(), Subject: id.String(), DataContentType: "application/json", Data: body,
		})
		if err != nil {
			writeProblem(w, errInvalidJSON(err.Error()))
			return
		}
	}
	st, err := s.events.History.AppendAndPublish(r.Context(), in, in.Type+"."+owner.RoutingKey)
	var oe *events.OutcomeError
	if errors.As(err, &oe) {
		switch oe.Outcome {
		case events.OutcomeDuplicate:
			writeProblem(w, problem(http.StatusConflict, "event-duplicate", "Event already stored",
				"an event with this source and id is already in the request's history"))
		case events.OutcomeOverLimit:
			writeProblem(w, problem(http.StatusConflict, "event-limit", "Too many events",
				"the request has as many events as the gateway keeps for one request"))
		default:
			writeError(w, correlation.ErrNotFound)
		}
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if s.events.Wake != nil {
		s.events.Wake()
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"event_id": strconv.FormatInt(st.Seq, 10), "event": json.RawMessage(st.Event)})
}

// topicEvents handles GET /v1/events?topic=<pattern>: live events on the
// events exchange whose routing key matches the AMQP topic pattern, as
// Server-Sent Events. A subscriber that falls behind is sent a dropped
// event and disconnected.
func (s *Server) topicEvents(w http.ResponseWriter, r *http.Request) {
	if s.events.Live == nil {
		writeProblem(w, errNotFound("this gateway serves no topic subscriptions"))
		return
	}
	topic := r.URL.Query().Get("topic")
	if topic == "" {
		topic = "#"
	}
	if err := events.ValidPattern(topic); err != nil {
		writeProblem(w, errInvalidParameter("topic: "+err.Error()))
		return
	}
	release, ok := s.holdWaiter(w, r)
	if !ok {
		return
	}
	defer release()
	who := caller(r)
	if who.RequestID != uuid.Nil {
		writeProblem(w, errForbidden("a read token reads one request, not topics"))
		return
	}
	sub, err := s.events.Live.Subscribe(topic)
	if errors.Is(err, events.ErrTooManySubscribers) {
		p := problem(http.StatusServiceUnavailable, "too-many-subscribers", "Too many subscribers",
			"this instance has as many topic subscriptions as it serves; try again later")
		p.RetryAfter = 5
		writeProblem(w, p)
		return
	}
	if err != nil {
		writeProblem(w, errInvalidParameter("topic: "+err.Error()))
		return
	}
	defer sub.Close()
	sse, err := events.NewSSEWriter(w)
	if err != nil {
		return
	}
	heartbeat := time.NewTicker(s.events.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.draining.Done():
			return
		case <-heartbeat.C:
			if err := sse.Comment("keep-alive"); err != nil {
				return
			}
		case m, ok := <-sub.Messages():
			if !ok {
				if sub.Dropped() {
					_ = sse.Event("", "dropped", []byte(`{"detail":"this subscriber fell behind and events were dropped; reconnect to follow again"}`))
				}
				return
			}
			ev, err := events.Parse(m.Body)
			typ := "message"
			if err == nil {
				typ = ev.Type
			}
			// Each project sees its own events; an event that names no
			// project (published without the request's project header)
			// only the operators do.
			if !who.Operator() && (err != nil || ev.Project != who.ProjectID.String()) {
				continue
			}
			if err := sse.Event("", typ, m.Body); err != nil {
				return
			}
		}
	}
}

// requestsPage is the answer to GET /v1/requests.
type requestsPage struct {
	Requests   []recordJSON `json:"requests"`
	NextBefore *string      `json:"next_before"`
}

// listRequests handles GET /v1/requests: recent requests, newest first,
// filtered by status and routing key.
func (s *Server) listRequests(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := correlation.Filter{Limit: 50}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			writeProblem(w, errInvalidParameter("limit must be a whole number from 1 to 500"))
			return
		}
		f.Limit = n
	}
	if v := q.Get("status"); v != "" {
		switch st := correlation.Status(v); st {
		case correlation.StatusQueued, correlation.StatusPending, correlation.StatusReplied, correlation.StatusFailed,
			correlation.StatusExpired, correlation.StatusUnroutable, correlation.StatusCancelled, correlation.StatusPartial:
			f.Status = st
		default:
			writeProblem(w, errInvalidParameter("status must be one of queued, pending, replied, failed, expired, unroutable, cancelled, partial"))
			return
		}
	}
	if v := q.Get("routing_key"); v != "" {
		base := strings.TrimSuffix(v, ".#")
		if v != "#" {
			if _, p := routingKey("/" + strings.ReplaceAll(base, ".", "/")); p != nil {
				writeProblem(w, errInvalidParameter("routing_key must be a routing key, or a routing key followed by .#"))
				return
			}
		}
		f.RoutingKey = v
	}
	if v := q.Get("before"); v != "" {
		id, err := parseUUID(v)
		if err != nil {
			writeProblem(w, errInvalidParameter("before must be a request id (next_before of the previous page)"))
			return
		}
		f.Before = id
	}
	who := caller(r)
	if who.RequestID != uuid.Nil {
		writeProblem(w, errForbidden("a read token reads one request, not lists"))
		return
	}
	if !who.Operator() {
		f.Project = &who.ProjectID
	}
	recs, err := s.records.List(r.Context(), f)
	if err != nil {
		writeError(w, err)
		return
	}
	out := requestsPage{Requests: make([]recordJSON, 0, len(recs))}
	for _, rec := range recs {
		if who.CanRead(rec.ProjectID, rec.ID, rec.RoutingKey) {
			out.Requests = append(out.Requests, recordJSON{Record: rec.Record()})
		}
	}
	if len(recs) == f.Limit {
		next := recs[len(recs)-1].ID.String()
		out.NextBefore = &next
	}
	writeJSON(w, http.StatusOK, out)
}

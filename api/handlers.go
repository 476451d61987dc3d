package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/httpjson"
)

func writeJSON(w http.ResponseWriter, status int, v any) { httpjson.WriteJSON(w, status, v) }

// readJSONBody enforces the content type, the size limit and JSON validity.
func (s *Server) readJSONBody(w http.ResponseWriter, r *http.Request) ([]byte, *Problem) {
	if p := checkJSONContentType(r.Header.Get("Content-Type")); p != nil {
		return nil, p
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, errBodyTooLarge(s.cfg.MaxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		return nil, readProblem(err, s.cfg.MaxBodyBytes)
	}
	return body, s.checkJSON(body)
}

// checkJSON checks a body held whole: valid JSON, not nested too deeply.
func (s *Server) checkJSON(body []byte) *Problem {
	if !json.Valid(body) {
		return errInvalidJSON("the body is not valid JSON")
	}
	if depth := jsonDepth(body); depth > s.cfg.MaxJSONDepth {
		return errInvalidJSON("the body nests " + strconv.Itoa(depth) + " levels deep; at most " +
			strconv.Itoa(s.cfg.MaxJSONDepth) + " are accepted")
	}
	return nil
}

// jsonDepth returns how deeply arrays and objects nest in valid JSON. Deep
// nesting is refused before anything parses it into memory (a responder,
// a CEL rule, a browser): it costs them stack and time, never the sender.
func jsonDepth(b []byte) int {
	var d depthScanner
	return d.write(b)
}

// depthScanner measures nesting depth over a body read in pieces.
type depthScanner struct {
	depth, deepest    int
	inString, escaped bool
}

// write scans the next piece and returns the deepest nesting so far.
func (d *depthScanner) write(b []byte) int {
	for _, c := range b {
		switch {
		case d.inString:
			switch {
			case d.escaped:
				d.escaped = false
			case c == '\\':
				d.escaped = true
			case c == '"':
				d.inString = false
			}
		case c == '"':
			d.inString = true
		case c == '{' || c == '[':
			d.depth++
			d.deepest = max(d.deepest, d.depth)
		case c == '}' || c == ']':
			d.depth--
		}
	}
	return d.deepest
}

// submit handles POST /<segment>/<segment>...: record, publish, answer.
func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	if isReserved(r.URL.Path) {
		// One of the gateway's own paths: say so rather than treat it as a request.
		if rc := chi.RouteContext(r.Context()); rc != nil &&
			(rc.Routes.Match(chi.NewRouteContext(), http.MethodGet, r.URL.Path) || rc.Routes.Match(chi.NewRouteContext(), http.MethodDelete, r.URL.Path)) {
			methodNotAllowed(w, r, http.MethodPost)
			return
		}
		writeProblem(w, errNotFound("nothing is served at "+r.URL.Path))
		return
	}
	// The escaped path, so /a%2Fb is refused instead of becoming a.b.
	key, p := routingKey(r.URL.EscapedPath())
	if p != nil {
		writeProblem(w, p)
		return
	}
	id, hasID, p := parseMessageID(r.Header.Get("Message-ID"))
	if p != nil {
		writeProblem(w, p)
		return
	}
	stamp, hasTime, p := parseTime(r.Header.Get("Time"))
	if p != nil {
		writeProblem(w, p)
		return
	}
	timeout, p := parseTimeout(r.Header.Get("Request-Timeout"), s.cfg.DefaultTimeout, s.cfg.MaxTimeout)
	if p != nil {
		writeProblem(w, p)
		return
	}
	// Without the header (or with an empty one), the route's default.
	expect := defaultExpect(s.cfg.ExpectReplies, key)
	if v := strings.Join(r.Header.Values("Expect-Replies"), ","); strings.TrimSpace(v) != "" {
		expect, p = parseExpectReplies(v)
		if p != nil {
			writeProblem(w, p)
			return
		}
	}
	webhook, p := parseWebhook(r.Header.Get("Reply-To"))
	if p == nil {
		p = s.checkReplyTo(webhook)
	}
	if p != nil {
		writeProblem(w, p)
		return
	}
	body, rest, p := s.readSubmitBody(w, r)
	if p != nil {
		writeProblem(w, p)
		return
	}

	who := caller(r)
	if who.RequestID != uuid.Nil || !who.CanSubmit(key) {
		writeProblem(w, errForbidden("this key may not submit to routing key "+strconv.Quote(key)))
		return
	}
	if s.auth.Limiter != nil {
		if ok, retry := s.auth.Limiter.Allow(r.Context(), who.ProjectID); !ok {
			writeProblem(w, errRateLimited("this project submits faster than its rate limit", retry))
			return
		}
	}
	now := s.now()
	if !hasID {
		id = s.newID()
	}
	if !hasTime {
		stamp = now.UnixMilli()
	}
	setRequestID(r.Context(), id)
	var blobStored bool
	if rest != nil {
		// Too large to travel inline: stored now, sent as a claim.
		body, blobStored, p = s.storeBlob(w, r, correlation.NewBlob{ID: id, RequestID: id, Role: correlation.BlobRequest}, rest)
		if p != nil {
			writeProblem(w, p)
			return
		}
	}
	rec, created, err := s.gw.Submit(r.Context(), correlation.NewRequest{
		ID:         id,
		RoutingKey: key,
		Time:       stamp,
		ExpiresAt:  now.Add(timeout),
		ReplyTo:    webhook,
		Body:       body,
		Claim:      rest != nil,
		ProjectID:  who.ProjectID,
		KeyID:      who.KeyID,

		ExpectReplies: expect,
	})
	if blobStored && !created {
		// The request was not recorded (or its id was another request's,
		// which had no blob): the blob must not become that request's.
		if err := s.blobs.DeleteBlob(context.WithoutCancel(r.Context()), id); err != nil {
			s.logger.ErrorContext(r.Context(), "delete unrecorded blob; the purge will", "request_id", id, "error", err)
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}

	h := w.Header()
	h["Message-ID"] = []string{rec.ID.String()} // canonical spelling of CONTRACT, not Message-Id
	h.Set("Time", strconv.FormatInt(rec.Time, 10))
	h.Set("Location", "/v1/requests/"+rec.ID.String())
	s.setReadToken(w, rec)
	if rec.Status == correlation.StatusUnroutable {
		writeProblem(w, problem(http.StatusServiceUnavailable, "unroutable", "Unroutable",
			"no queue is bound for routing key "+strconv.Quote(rec.RoutingKey)+"; the broker returned the request, which is kept with status unroutable"))
		return
	}

	if n, ok := preferWait(r.Header.Values("Prefer")); ok {
		wait := waitSeconds(n, s.cfg.MaxWait)
		if !rec.Status.Terminal() && wait > 0 {
			waited, err := s.wait(r.Context(), rec.ID, wait)
			if err != nil {
				if r.Context().Err() != nil {
					return // the client left; the request goes on without it
				}
				writeError(w, err)
				return
			}
			rec = waited
		}
		h.Set("Preference-Applied", "wait="+strconv.Itoa(int(wait/time.Second)))
		if rec.Status.Terminal() {
			writeJSON(w, http.StatusOK, s.render(r.Context(), rec))
			if replied(rec) {
				s.gw.ReplyRead(rec.ID)
			}
			return
		}
	}
	writeJSON(w, http.StatusAccepted, s.render(r.Context(), rec))
}

// lookup parses {id}, applies ?wait= and reads the record.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (correlation.Request, bool) {
	id, err := parseUUID(chi.URLParam(r, "id"))
	if err != nil {
		writeProblem(w, errNotFound("no request has this id: request ids are UUIDs"))
		return correlation.Request{}, false
	}
	setRequestID(r.Context(), id)
	wait, p := parseWait(r.URL.Query().Get("wait"), s.cfg.MaxWait)
	if p != nil {
		writeProblem(w, p)
		return correlation.Request{}, false
	}
	if _, ok := s.visible(w, r, id); !ok {
		return correlation.Request{}, false
	}
	if wait > 0 {
		release, ok := s.holdWaiter(w, r)
		if !ok {
			return correlation.Request{}, false
		}
		defer release()
	}
	rec, err := s.wait(r.Context(), id, wait)
	if err != nil {
		if r.Context().Err() != nil {
			return correlation.Request{}, false // the client left
		}
		writeError(w, err)
		return correlation.Request{}, false
	}
	return rec, true
}

// getRequest handles GET /v1/requests/{id}[?wait=N].
func (s *Server) getRequest(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.lookup(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.render(r.Context(), rec))
	if replied(rec) {
		s.gw.ReplyRead(rec.ID)
	}
}

// getReply handles GET /v1/requests/{id}/reply[?wait=N].
func (s *Server) getReply(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.lookup(w, r)
	if !ok {
		return
	}
	h := w.Header()
	h.Set("Request-Status", string(rec.Status))
	switch rec.Status {
	case correlation.StatusReplied, correlation.StatusFailed, correlation.StatusPartial:
		// A gather's first reply; the record lists them all.
		h["Message-ID"] = []string{rec.Reply.MessageID}
		h["Correlation-ID"] = []string{rec.Reply.CorrelationID}
		h.Set("Time", strconv.FormatInt(rec.Reply.Time, 10))
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		if _, err := w.Write(rec.Reply.Body); err == nil {
			s.gw.ReplyRead(rec.ID)
		}
	case correlation.StatusQueued, correlation.StatusPending:
		h.Set("Retry-After", "1")
		writeJSON(w, http.StatusAccepted, s.render(r.Context(), rec))
	default:
		writeProblem(w, problem(http.StatusGone, string(rec.Status), "No reply",
			"the request ended "+string(rec.Status)+" and will never have a reply"))
	}
}

// replyOutcome is the answer to POST /v1/replies.
type replyOutcome struct {
	CorrelationID string `json:"correlation_id"`
	Outcome       string `json:"outcome"`
}

// postReply handles POST /v1/replies: a reply over HTTP, same rules as AMQP.
func (s *Server) postReply(w http.ResponseWriter, r *http.Request) {
	corr := r.Header.Get("Correlation-ID")
	if corr == "" {
		corr = r.Header.Get("Correl-ID")
	}
	if corr == "" {
		writeProblem(w, errInvalidHeader("Correlation-ID (or Correl-ID) is required: the id of the request this replies to"))
		return
	}
	if len(corr) > 255 {
		writeProblem(w, errInvalidHeader("Correlation-ID is longer than 255 characters"))
		return
	}
	if !utf8.ValidString(corr) {
		writeProblem(w, errInvalidHeader("Correlation-ID is not valid UTF-8"))
		return
	}
	msgID, hasID, p := parseMessageID(r.Header.Get("Message-ID"))
	if p != nil {
		writeProblem(w, p)
		return
	}
	stamp, hasTime, p := parseTime(r.Header.Get("Time"))
	if p != nil {
		writeProblem(w, p)
		return
	}
	status := strings.ToLower(strings.TrimSpace(r.Header.Get("Reply-Status")))
	if status != "" && status != "ok" && status != "error" {
		writeProblem(w, errInvalidHeader("Reply-Status must be ok or error"))
		return
	}
	from := strings.TrimSpace(r.Header.Get("Reply-From"))
	if len(from) > 255 || !utf8.ValidString(from) {
		writeProblem(w, errInvalidHeader("Reply-From must be valid UTF-8 of at most 255 bytes"))
		return
	}
	body, rest, p := s.readSubmitBody(w, r)
	if p != nil {
		writeProblem(w, p)
		return
	}
	if !hasID {
		msgID = s.newID()
	}
	if !hasTime {
		stamp = s.now().UnixMilli()
	}
	unknown := problem(http.StatusNotFound, "unknown-correlation", "Unknown correlation id",
		"no request has this correlation id")
	id, err := uuid.Parse(corr)
	if err == nil {
		setRequestID(r.Context(), id)
		// A reply to a request of another project is refused as unknown,
		// and not kept: it says nothing about that request.
		owner, err := s.records.Owner(r.Context(), id)
		switch {
		case errors.Is(err, correlation.ErrNotFound):
			if rest != nil {
				// A large reply is stored with its request: with none, it
				// is refused unread rather than kept as a dead letter.
				writeProblem(w, problem(http.StatusNotFound, "unknown-correlation", "Unknown correlation id",
					"no request has this correlation id; a reply by claim check was not kept"))
				return
			}
		case err != nil:
			writeError(w, err)
			return
		case !caller(r).CanRead(owner.ProjectID, id, owner.RoutingKey) || caller(r).RequestID != uuid.Nil:
			writeProblem(w, unknown)
			return
		}
	} else if rest != nil {
		writeProblem(w, unknown)
		return
	}
	if rest != nil {
		// Too large to keep inline: stored as a blob of the request, and
		// the reply is its claim.
		if body, _, p = s.storeBlob(w, r, correlation.NewBlob{ID: s.newID(), RequestID: id, Role: correlation.BlobReply}, rest); p != nil {
			writeProblem(w, p)
			return
		}
	}
	outcome, err := s.gw.StoreReply(r.Context(), correlation.IncomingReply{
		CorrelationID: corr,
		MessageID:     msgID.String(),
		From:          from,
		Time:          stamp,
		Body:          body,
		Failed:        status == "error",
		Source:        "http",
		Headers:       map[string]any{"user_agent": r.UserAgent(), "remote_addr": r.RemoteAddr},
	})
	if err != nil {
		writeError(w, err)
		return
	}
	switch outcome {
	case correlation.OutcomeStored, correlation.OutcomeDuplicate:
		writeJSON(w, http.StatusOK, replyOutcome{CorrelationID: corr, Outcome: string(outcome)})
	case correlation.OutcomeUnknown:
		writeProblem(w, problem(http.StatusNotFound, "unknown-correlation", "Unknown correlation id",
			"no request has this correlation id; the reply was kept as a dead letter"))
	default: // late, closed
		writeProblem(w, problem(http.StatusGone, "reply-"+string(outcome), "Request closed",
			"the request is no longer waiting for a reply ("+string(outcome)+"); the reply was kept as a dead letter"))
	}
}

// cancelRequest handles DELETE /v1/requests/{id}: an open request becomes
// cancelled (its waiters wake, and the responder is told by a
// request.cancelled event). Cancelling a cancelled request again is
// answered the same way; any other finished request is 409.
func (s *Server) cancelRequest(w http.ResponseWriter, r *http.Request) {
	id, err := parseUUID(chi.URLParam(r, "id"))
	if err != nil {
		writeProblem(w, errNotFound("no request has this id: request ids are UUIDs"))
		return
	}
	setRequestID(r.Context(), id)
	owner, ok := s.visible(w, r, id)
	if !ok || !s.mayChange(w, r, owner) {
		return
	}
	rec, err := s.gw.Cancel(r.Context(), id)
	s.audit(r, "request.cancel", id.String(), outcomeOf(err, correlation.ErrNotCancellable), nil)
	switch {
	case err == nil:
	case errors.Is(err, correlation.ErrNotCancellable) && rec.Status == correlation.StatusCancelled:
	case errors.Is(err, correlation.ErrNotCancellable):
		writeProblem(w, problem(http.StatusConflict, "not-cancellable", "Request already finished",
			"the request ended "+string(rec.Status)+" and cannot be cancelled"))
		return
	default:
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.render(r.Context(), rec))
}

// deadLetterJSON is the JSON form of a dead letter.
type deadLetterJSON struct {
	ID            int64           `json:"id"`
	Reason        string          `json:"reason"`
	Source        string          `json:"source"`
	CorrelationID string          `json:"correlation_id"`
	MessageID     string          `json:"message_id"`
	Headers       map[string]any  `json:"headers"`
	Body          json.RawMessage `json:"body"`        // the body, when it is JSON
	BodyBase64    []byte          `json:"body_base64"` // the body's exact bytes
	ReceivedAt    time.Time       `json:"received_at"`
}

type deadLetterPage struct {
	DeadLetters []deadLetterJSON `json:"dead_letters"`
	// NextBefore is the ?before= of the next (older) page; 0 when none.
	NextBefore int64 `json:"next_before"`
}

// listDeadLetters handles GET /v1/dead-letters?limit=N&before=ID, newest first.
func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeProblem(w, errInvalidParameter("limit must be a whole number from 1 to 1000"))
			return
		}
		limit = n
	}
	var before int64
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			writeProblem(w, errInvalidParameter("before must be a dead-letter id, a positive integer"))
			return
		}
		before = n
	}
	var project *uuid.UUID
	switch p := caller(r); {
	case p.Operator():
	case p.Scopes.IsAdmin() && p.RequestID == uuid.Nil:
		project = &p.ProjectID
	default:
		writeProblem(w, errForbidden("dead letters are for the project's admins"))
		return
	}
	list, err := s.records.ListDeadLetters(r.Context(), project, limit, before)
	if err != nil {
		writeError(w, err)
		return
	}
	page := deadLetterPage{DeadLetters: make([]deadLetterJSON, 0, len(list))}
	for _, d := range list {
		j := deadLetterJSON{ID: d.ID, Reason: d.Reason, Source: d.Source, CorrelationID: d.CorrelationID,
			MessageID: d.MessageID, Headers: d.Headers, BodyBase64: d.Body, ReceivedAt: d.ReceivedAt}
		if json.Valid(d.Body) {
			j.Body = d.Body
		}
		page.DeadLetters = append(page.DeadLetters, j)
	}
	if len(list) == limit {
		page.NextBefore = list[len(list)-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

// outcomeOf names how an action ended for the audit trail: ok, refused
// (the expected refusal, e.g. cancelling a finished request) or error.
func outcomeOf(err, refused error) string {
	switch {
	case err == nil:
		return "ok"
	case refused != nil && errors.Is(err, refused):
		return "refused"
	default:
		return "error"
	}
}

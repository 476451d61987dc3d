package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/webhook"
)

// Deliveries is what the handlers need from the webhook delivery store.
type Deliveries interface {
	Get(ctx context.Context, id uuid.UUID) (webhook.Delivery, error)
	Attempts(ctx context.Context, id uuid.UUID) ([]webhook.Attempt, error)
	Retry(ctx context.Context, id uuid.UUID) (webhook.Delivery, error)
}

// Webhooks turns on Reply-To webhooks (CONTRACT §4). Without it, a request
// with Reply-To is refused: it would never be delivered.
type Webhooks struct {
	// ValidateURL checks a Reply-To URL at submit time (scheme, form, and
	// literal addresses against the SSRF policy).
	ValidateURL func(string) error
	// Deliveries reads and retries deliveries.
	Deliveries Deliveries
	// Nudge tells the dispatcher a delivery is due now.
	Nudge func()
}

// SetWebhooks turns webhooks on; call it before Handler.
func (s *Server) SetWebhooks(w Webhooks) { s.webhooks = w }

// recordJSON is a request record with its webhook delivery.
type recordJSON struct {
	correlation.Record
	Delivery *deliveryJSON `json:"delivery"`
}

type deliveryJSON struct {
	URL           string  `json:"url"`
	State         string  `json:"state"`
	EventType     string  `json:"event_type"`
	Attempts      int     `json:"attempts"`
	NextAttemptAt *int64  `json:"next_attempt_at"`
	LastStatus    *int    `json:"last_status"`
	LastError     *string `json:"last_error"`
	DoneAt        *int64  `json:"done_at"`
}

func toDeliveryJSON(d webhook.Delivery) *deliveryJSON {
	out := &deliveryJSON{URL: d.URL, State: d.State, EventType: d.EventType, Attempts: d.Attempts,
		LastStatus: d.LastStatus, DoneAt: millis(d.DoneAt)}
	if d.State == webhook.StatePending {
		out.NextAttemptAt = millis(&d.NextAttemptAt)
	}
	if d.LastError != "" {
		out.LastError = &d.LastError
	}
	return out
}

type attemptJSON struct {
	Attempt      int     `json:"attempt"`
	URL          string  `json:"url"`
	StartedAt    int64   `json:"started_at"`
	DurationMS   float64 `json:"duration_ms"`
	HTTPStatus   *int    `json:"http_status"`
	Error        *string `json:"error"`
	ResponseBody *string `json:"response_body"`
	Outcome      string  `json:"outcome"`
}

func millis(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	ms := t.UnixMilli()
	return &ms
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// render is the record as answered: with its webhook delivery once the
// request has ended and one exists. A failure to read the delivery leaves
// it out rather than failing the read of the record.
func (s *Server) render(ctx context.Context, r correlation.Request) recordJSON {
	out := recordJSON{Record: r.Record()}
	if r.ReplyTo == "" || !r.Status.Terminal() || s.webhooks.Deliveries == nil {
		return out
	}
	d, err := s.webhooks.Deliveries.Get(ctx, r.ID)
	switch {
	case err == nil:
		out.Delivery = toDeliveryJSON(d)
	case !errors.Is(err, webhook.ErrNoDelivery):
		s.logger.WarnContext(ctx, "read webhook delivery", "request_id", r.ID, "error", err)
	}
	return out
}

// replied reports whether r carries its reply; a read answering with it is
// the reply's receipt.
func replied(r correlation.Request) bool {
	return r.Status == correlation.StatusReplied || r.Status == correlation.StatusFailed ||
		r.Status == correlation.StatusPartial
}

// checkReplyTo validates a Reply-To URL beyond its syntax.
func (s *Server) checkReplyTo(u string) *Problem {
	if u == "" {
		return nil
	}
	if s.webhooks.ValidateURL == nil {
		return errInvalidHeader("this gateway delivers no webhooks (no signing secret is configured), so Reply-To cannot be used")
	}
	if err := s.webhooks.ValidateURL(u); err != nil {
		return errInvalidHeader("Reply-To: " + err.Error())
	}
	return nil
}

// deliveriesView is the answer to GET /v1/requests/{id}/deliveries.
type deliveriesView struct {
	RequestID string        `json:"request_id"`
	Delivery  *deliveryJSON `json:"delivery"`
	Attempts  []attemptJSON `json:"attempts"`
}

// listDeliveries handles GET /v1/requests/{id}/deliveries: the delivery
// and every attempt, oldest first.
func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) {
	rec, ok := s.lookup(w, r)
	if !ok {
		return
	}
	out := deliveriesView{RequestID: rec.ID.String(), Attempts: []attemptJSON{}}
	if s.webhooks.Deliveries != nil {
		d, err := s.webhooks.Deliveries.Get(r.Context(), rec.ID)
		switch {
		case errors.Is(err, webhook.ErrNoDelivery):
		case err != nil:
			writeError(w, err)
			return
		default:
			out.Delivery = toDeliveryJSON(d)
			attempts, err := s.webhooks.Deliveries.Attempts(r.Context(), rec.ID)
			if err != nil {
				writeError(w, err)
				return
			}
			for _, a := range attempts {
				out.Attempts = append(out.Attempts, attemptJSON{
					Attempt: a.Attempt, URL: a.URL, StartedAt: a.StartedAt.UnixMilli(),
					DurationMS: float64(a.Duration.Microseconds()) / 1000, HTTPStatus: a.HTTPStatus,
					Error: optional(a.Error), ResponseBody: optional(a.ResponseBody), Outcome: a.Outcome,
				})
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// retryDelivery handles POST /v1/requests/{id}/deliveries/retry: a delivery
// that gave up is attempted again, with the schedule starting over.
func (s *Server) retryDelivery(w http.ResponseWriter, r *http.Request) {
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
	if s.webhooks.Deliveries == nil {
		writeError(w, webhook.ErrNoDelivery)
		return
	}
	d, err := s.webhooks.Deliveries.Retry(r.Context(), id)
	s.audit(r, "delivery.retry", id.String(), outcomeOf(err, webhook.ErrNotRetryable), nil)
	if err != nil {
		writeError(w, err)
		return
	}
	if s.webhooks.Nudge != nil {
		s.webhooks.Nudge()
	}
	writeJSON(w, http.StatusAccepted, toDeliveryJSON(d))
}

package correlation

import "encoding/json"

// Record is the JSON form of a request record (CONTRACT §2): what GET
// /v1/requests/{id} answers and what a webhook delivers.
type Record struct {
	ID         string          `json:"id"`
	RoutingKey string          `json:"routing_key"`
	Status     string          `json:"status"`
	Time       int64           `json:"time"`
	ExpiresAt  int64           `json:"expires_at"`
	ReplyTo    *string         `json:"reply_to"`
	Request    json.RawMessage `json:"request"`
	Reply      *ReplyRecord    `json:"reply"`
	// PickedUpAt is when a responder started on it (its request.received
	// event, or at the latest its reply), Unix milliseconds; null until then.
	PickedUpAt *int64 `json:"picked_up_at"`
	// Stalled says the request is still open and nobody has picked it up
	// within the gateway's stall time: it waits in a queue nobody reads.
	Stalled bool `json:"stalled"`
}

// ReplyRecord is the JSON form of a stored reply.
type ReplyRecord struct {
	MessageID     string          `json:"message_id"`
	CorrelationID string          `json:"correlation_id"`
	Time          int64           `json:"time"`
	Body          json.RawMessage `json:"body"`
}

// Record returns r's JSON form.
func (r Request) Record() Record {
	out := Record{
		ID:         r.ID.String(),
		RoutingKey: r.RoutingKey,
		Status:     string(r.Status),
		Time:       r.Time,
		ExpiresAt:  r.ExpiresAt.UnixMilli(),
		Request:    json.RawMessage(r.Body),
	}
	if r.ReplyTo != "" {
		out.ReplyTo = &r.ReplyTo
	}
	if r.PickedUpAt != nil {
		ms := r.PickedUpAt.UnixMilli()
		out.PickedUpAt = &ms
	}
	out.Stalled = r.StalledAt != nil && r.PickedUpAt == nil && !r.Status.Terminal()
	if r.Reply != nil {
		out.Reply = &ReplyRecord{
			MessageID:     r.Reply.MessageID,
			CorrelationID: r.Reply.CorrelationID,
			Time:          r.Reply.Time,
			Body:          json.RawMessage(r.Reply.Body),
		}
	}
	return out
}

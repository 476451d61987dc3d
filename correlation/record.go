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
	// RepliesExpected is the Expect-Replies of the request: 1 for an
	// ordinary request, N for a gather of N, null for Expect-Replies: all.
	RepliesExpected *int `json:"replies_expected"`
	// Replies lists every reply kept, in arrival order, each with who sent
	// it; for an ordinary request, its one reply (or none).
	Replies []GatheredReply `json:"replies"`
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

// GatheredReply is the JSON form of one of a request's replies: a reply
// record with the responder that sent it and whether it was an error.
type GatheredReply struct {
	ReplyRecord
	// From names the responder: the AMQP app_id, the Reply-From header of
	// POST /v1/replies, or else the reply's message id.
	From string `json:"from"`
	// Status is "ok", or "error" for a reply marked status: error.
	Status string `json:"status"`
}

func gathered(rp Reply, failed bool) GatheredReply {
	status := "ok"
	if failed {
		status = "error"
	}
	return GatheredReply{
		ReplyRecord: ReplyRecord{MessageID: rp.MessageID, CorrelationID: rp.CorrelationID, Time: rp.Time,
			Body: json.RawMessage(rp.Body)},
		From:   rp.From,
		Status: status,
	}
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
	if r.RepliesExpected != ExpectAll {
		n := max(r.RepliesExpected, 1)
		out.RepliesExpected = &n
	}
	out.Replies = []GatheredReply{}
	switch {
	case r.Gathers():
		for _, rp := range r.Replies {
			out.Replies = append(out.Replies, gathered(rp, rp.Failed))
		}
	case r.Reply != nil:
		out.Replies = append(out.Replies, gathered(*r.Reply, r.Status == StatusFailed))
	}
	return out
}

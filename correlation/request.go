// Package correlation is switchboard's correlation store: the request records
// kept in Postgres, their status transitions, the matching of replies to
// requests by correlation id, and the waiters that are woken — on every
// gateway instance — when a request reaches a terminal status.
//
// Postgres is the single source of truth. Every transition is a conditional
// UPDATE (only open requests can be replied to, expired or published), so
// concurrent gateways, redelivered replies and a racing sweeper all agree on
// one outcome without application-level locks. Each transition that ends a
// request also sends a NOTIFY, which the Listener of every instance turns into
// wake-ups for its local waiters.
//
// The hot path is group-committed: concurrent Create, MarkPublished and
// StoreReply calls share one statement and one commit each (see package
// internal/groupcommit), in id order so that concurrent batches cannot
// deadlock, and a batch of replies announces its ids in one NOTIFY per 200
// ids. No call returns before its batch has committed.
package correlation

import (
	"crypto/sha256"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Status is where a request is in its life.
type Status string

// The statuses of a request. All but queued and pending are terminal.
const (
	StatusQueued     Status = "queued"     // committed, not yet confirmed by the broker
	StatusPending    Status = "pending"    // published and confirmed; waiting for a reply
	StatusReplied    Status = "replied"    // a reply was stored
	StatusFailed     Status = "failed"     // the responder replied with status: error
	StatusExpired    Status = "expired"    // the deadline passed without a reply
	StatusUnroutable Status = "unroutable" // the broker returned it: no queue is bound
	StatusCancelled  Status = "cancelled"  // the client cancelled it
	StatusPartial    Status = "partial"    // a gather's deadline passed with some, not all, of its replies
)

// ExpectAll as a request's expected reply count gathers every reply that
// arrives before its deadline (Expect-Replies: all).
const ExpectAll = -1

// MaxExpectReplies bounds Expect-Replies: N.
const MaxExpectReplies = 100

// Terminal reports whether no further transition can happen.
func (s Status) Terminal() bool {
	switch s {
	case StatusQueued, StatusPending:
		return false
	default:
		return true
	}
}

// Sentinel errors of the correlation store.
var (
	// ErrNotFound means no request has that id.
	ErrNotFound = errors.New("request not found")
	// ErrConflict means the id is taken by a request with another routing key or body.
	ErrConflict = errors.New("message id already used for a different request")
	// ErrUnavailable means Postgres could not be reached.
	ErrUnavailable = errors.New("database unavailable")
)

// Request is one request record.
type Request struct {
	ID         uuid.UUID
	RoutingKey string
	Status     Status
	Time       int64 // creation time, Unix milliseconds (client's or stamped)
	ExpiresAt  time.Time
	ReplyTo    string // webhook URL, empty when none
	Body       []byte // the JSON body exactly as received, or its claim (see Claim)
	// Claim says Body is a claim check ({"claim": {...}}): the content
	// itself is a blob, stored by PutBlob under the request's id.
	Claim       bool
	ProjectID   uuid.UUID // the project it belongs to (uuid.Nil: the default project)
	KeyID       uuid.UUID // the API key that submitted it; uuid.Nil: none
	CreatedAt   time.Time
	PublishedAt *time.Time
	// PickedUpAt is when a responder started on it: the time of its
	// request.received event, stored while it was open, or at the latest
	// its reply (nil: neither yet). StalledAt is when the
	// sweeper flagged it as not picked up in time (nil: not flagged).
	PickedUpAt *time.Time
	StalledAt  *time.Time
	Attempts   int
	// Reply is the first reply stored (nil: none yet). A gathering request
	// has it as soon as its first reply is stored, while still open.
	Reply *Reply
	// RepliesExpected is 1 for an ordinary request, 2..MaxExpectReplies
	// for a gather of that many replies, or ExpectAll.
	RepliesExpected int
	// Replies are a gathering request's replies in arrival order (nil for
	// an ordinary request, whose one reply is Reply).
	Replies []Reply
	// TraceParent and TraceState are the W3C trace context of the span
	// that submitted the request (empty: none), kept so that whoever
	// publishes it, and its webhook deliveries, continue that trace.
	TraceParent, TraceState string
}

// Reply is the reply stored for a request.
type Reply struct {
	// From names the responder: the reply's AMQP app_id (or the Reply-From
	// header over HTTP), else its message id.
	From          string
	MessageID     string
	CorrelationID string
	Time          int64 // Unix milliseconds
	Body          []byte
	ReceivedAt    time.Time
	Failed        bool // the responder marked it status: error (gathered replies only)
}

// Gathers reports whether the request collects more than one reply.
func (r Request) Gathers() bool { return r.RepliesExpected > 1 || r.RepliesExpected == ExpectAll }

// NewRequest is what the gateway records before it publishes.
type NewRequest struct {
	ID         uuid.UUID
	RoutingKey string
	Time       int64
	ExpiresAt  time.Time
	ReplyTo    string
	Body       []byte
	// Claim says Body is a claim check for a blob already stored (PutBlob).
	Claim bool
	// ProjectID owns the request; KeyID is the key that submitted it
	// (uuid.Nil: none).
	ProjectID, KeyID uuid.UUID
	// PublishAfter is when the outbox relay may take the request if the
	// submitting gateway has not published it by then (it crashed, or the
	// broker was down). The submitter publishes at once itself.
	PublishAfter time.Time
	// TraceParent and TraceState are the W3C trace context of the submit
	// (empty: none); see Request.
	TraceParent, TraceState string
	// ExpectReplies is how many replies to gather: 0 or 1 for an ordinary
	// request, 2..MaxExpectReplies, or ExpectAll.
	ExpectReplies int
}

// IncomingReply is a reply as it arrived, over AMQP or HTTP.
type IncomingReply struct {
	CorrelationID string // raw, as received: it may not even be a UUID
	MessageID     string
	// From names the responder (its AMQP app_id, or the Reply-From header);
	// empty: the message id stands in. A gathering request keeps one reply
	// per responder.
	From    string
	Time    int64
	Body    []byte
	Failed  bool           // the responder marked it status: error
	Source  string         // "amqp" or "http"
	Headers map[string]any // kept with a dead letter
}

// storable returns the reply with its text fields made safe for Postgres
// text and jsonb, which refuse invalid UTF-8 and NUL. A responder can send
// any bytes in an AMQP short string or header; a reply that Postgres cannot
// store would otherwise be redelivered until the broker dead-letters it, and
// then fail again as a dead letter. Bodies are bytea and kept as they are.
func (in IncomingReply) storable() IncomingReply {
	in.CorrelationID = cleanText(in.CorrelationID)
	in.MessageID = cleanText(in.MessageID)
	in.From = cleanText(in.From)
	if in.Headers != nil {
		h := make(map[string]any, len(in.Headers))
		for k, v := range in.Headers {
			if s, ok := v.(string); ok {
				v = cleanText(s)
			}
			h[cleanText(k)] = v
		}
		in.Headers = h
	}
	return in
}

// cleanText replaces invalid UTF-8 and NUL characters with U+FFFD.
func cleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// Outcome says what storing a reply did.
type Outcome string

// Outcomes of StoreReply. Every outcome but Stored and Duplicate leaves a
// dead-letter record.
const (
	OutcomeStored    Outcome = "stored"    // first reply (or a gather's next responder): kept with the request
	OutcomeDuplicate Outcome = "duplicate" // the request already had this reply (or this responder's); ignored
	OutcomeUnknown   Outcome = "unknown"   // no request has this correlation id
	OutcomeLate      Outcome = "late"      // the request had expired
	OutcomeClosed    Outcome = "closed"    // the request was unroutable or cancelled, or its gather was complete
)

func digest(body []byte) []byte {
	sum := sha256.Sum256(body)
	return sum[:]
}

// responder names who sent the reply: From, or else its message id.
func (in IncomingReply) responder() string {
	if in.From != "" {
		return in.From
	}
	return in.MessageID
}

// expected is the replies_expected the request is stored with.
func (n NewRequest) expected() int {
	if n.ExpectReplies == 0 {
		return 1
	}
	return n.ExpectReplies
}

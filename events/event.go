package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// CloudEvent is the structured-mode CloudEvents 1.0 JSON envelope of every
// event on the events exchange. correlationid is an extension attribute
// carrying the id of the request the event is about.
type CloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Time            time.Time `json:"time"`
	Subject         string    `json:"subject,omitempty"`
	DataContentType string    `json:"datacontenttype"`
	CorrelationID   string    `json:"correlationid,omitempty"`
	// Project is the extension attribute switchboardproject: the id of the
	// project the event belongs to, when the publisher knew it.
	Project string          `json:"switchboardproject,omitempty"`
	Data    json.RawMessage `json:"data"`
}

// ErrInvalid means a message is not an event the gateway can keep.
var ErrInvalid = errors.New("invalid event")

// Incoming is an event as it arrived, before it is stored.
type Incoming struct {
	RequestID uuid.UUID
	Source    string
	ID        string
	Type      string
	Event     []byte    // the structured-mode CloudEvent JSON, as stored and served
	Time      time.Time // its time attribute; zero when it has none
}

// Properties are the AMQP message properties an event may lean on when its
// body is not a structured CloudEvent.
type Properties struct {
	ContentType   string
	CorrelationID string
	MessageID     string
	Type          string
	AppID         string
	Timestamp     time.Time
}

// FromMessage reads an event from a message on the events exchange. A body
// that is a structured-mode CloudEvent (content type
// application/cloudevents+json, or a JSON object with specversion) is kept
// as it is; any other JSON body is the data of an event built from the
// message's properties (CONTRACT §5: services may publish a plain JSON body
// with correlation_id = the request id): type from the type property (else
// "progress"), id from message_id, source from app_id. The request is the
// event's correlationid, else its subject, else the correlation_id
// property; ok is false when none of them is a request id.
func FromMessage(body []byte, p Properties) (in Incoming, ok bool, err error) {
	// One decoding serves both forms: a structured CloudEvent fills the
	// envelope; any other JSON leaves specversion unset.
	var ev struct {
		CloudEvent
		SpecVersion *string `json:"specversion"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		if !json.Valid(body) {
			return Incoming{}, false, fmt.Errorf("%w: the body is not JSON", ErrInvalid)
		}
		// Valid JSON that does not fit the envelope: a CloudEvent with a
		// malformed attribute, or plain data (an array, a string, an object
		// with fields of its own).
		var probe struct {
			SpecVersion *string `json:"specversion"`
		}
		_ = json.Unmarshal(body, &probe)
		if probe.SpecVersion != nil || strings.HasPrefix(p.ContentType, "application/cloudevents+json") {
			return Incoming{}, false, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return fromPlainMessage(body, p)
	}
	if ev.SpecVersion != nil || strings.HasPrefix(p.ContentType, "application/cloudevents+json") {
		ce := ev.CloudEvent
		if ev.SpecVersion != nil {
			ce.SpecVersion = *ev.SpecVersion
		}
		if err := ce.validate(); err != nil {
			return Incoming{}, false, err
		}
		id, ok := requestOf(ce.CorrelationID, ce.Subject, p.CorrelationID)
		return Incoming{RequestID: id, Source: ce.Source, ID: ce.ID, Type: ce.Type, Event: body, Time: ce.Time}, ok, nil
	}
	return fromPlainMessage(body, p)
}

// fromPlainMessage wraps a JSON body that is not a CloudEvent as the data
// of one, built from the message's properties.
func fromPlainMessage(body []byte, p Properties) (Incoming, bool, error) {
	id, ok := requestOf(p.CorrelationID)
	if !ok {
		return Incoming{}, false, nil
	}
	ev := CloudEvent{
		SpecVersion: "1.0", ID: p.MessageID, Source: p.AppID, Type: p.Type, Time: p.Timestamp.UTC(),
		Subject: id.String(), DataContentType: "application/json", CorrelationID: id.String(), Data: body,
	}
	if ev.ID == "" {
		ev.ID = uuid.NewString() // nothing to deduplicate on
	}
	if ev.Source == "" {
		ev.Source = "amqp"
	}
	if ev.Type == "" {
		ev.Type = "progress"
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	return New(id, ev)
}

// New builds the Incoming for ev about request id, marshalling ev with its
// correlationid set to id.
func New(id uuid.UUID, ev CloudEvent) (Incoming, bool, error) {
	ev.CorrelationID = id.String()
	if err := ev.validate(); err != nil {
		return Incoming{}, false, err
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return Incoming{}, false, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return Incoming{RequestID: id, Source: ev.Source, ID: ev.ID, Type: ev.Type, Event: body, Time: ev.Time}, true, nil
}

// Parse reads a structured-mode CloudEvent and checks its required
// attributes.
func Parse(body []byte) (CloudEvent, error) {
	var ev CloudEvent
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&ev); err != nil {
		return CloudEvent{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return ev, ev.validate()
}

func (ev CloudEvent) validate() error {
	switch {
	case ev.SpecVersion != "1.0":
		return fmt.Errorf("%w: specversion must be 1.0", ErrInvalid)
	case ev.ID == "" || ev.Source == "" || ev.Type == "":
		return fmt.Errorf("%w: id, source and type are required", ErrInvalid)
	case len(ev.ID) > 255 || len(ev.Source) > 1024 || len(ev.Type) > 255:
		return fmt.Errorf("%w: id, type (255) or source (1024) too long", ErrInvalid)
	case strings.ContainsAny(ev.Type, "\r\n") || strings.ContainsRune(ev.ID, 0) || strings.ContainsRune(ev.Source, 0):
		return fmt.Errorf("%w: control characters in id, source or type", ErrInvalid)
	}
	return nil
}

// requestOf returns the first candidate that is a request id.
func requestOf(candidates ...string) (uuid.UUID, bool) {
	for _, c := range candidates {
		if id, err := uuid.Parse(c); err == nil && len(c) == 36 {
			return id, true
		}
	}
	return uuid.Nil, false
}

package rules

import (
	"context"
	"encoding/json"
	"time"
)

// Event is what every source produces and every condition sees: the
// CloudEvents attributes, whatever protocol the event came by.
type Event struct {
	ID      string          `json:"id"`
	Source  string          `json:"source"`
	Type    string          `json:"type"`
	Time    time.Time       `json:"time"`
	Subject string          `json:"subject,omitempty"`
	Data    json.RawMessage `json:"data"`
	// Hops counts the rule actions that led to this event (CloudEvents
	// extension attribute switchboardhops): an action's output carries the
	// input's hops plus one, and an event past the engine's limit is
	// dead-lettered instead of acted on, which cuts loops.
	Hops int `json:"switchboardhops,omitempty"`
}

// Handler takes the events of one source. It returns nil once every action
// of every matching rule has succeeded or been recorded as failed (with a
// dead letter); only then may the source acknowledge the event. An error
// means nothing was decided (e.g. Postgres is away): the source keeps the
// event and offers it again later.
type Handler func(ctx context.Context, ev Event) error

// Source produces events until ctx ends.
type Source interface {
	// Name is the source's name in the rule files.
	Name() string
	// Run delivers events to h until ctx ends or the source fails.
	Run(ctx context.Context, h Handler) error
}

package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/switchboard-gw/switchboard/events"
)

// Scope is one permission of a key:
//
//	admin            manage the project's keys, and read all of its requests
//	submit:PATTERN   submit requests whose routing key matches PATTERN
//	read:PATTERN     read requests (record, reply, events) whose routing key matches PATTERN
//
// PATTERN is an AMQP topic pattern (* one word, # zero or more words),
// matched exactly as a RabbitMQ topic exchange would.
//
// admin implies reading but not submitting: a key that manages others is
// not, by that alone, a producer. submit does not imply read either: a key
// that submits and then reads its replies needs both (e.g. submit:orders.#
// and read:orders.#), so a fire-and-forget producer can be given less.
type Scope string

// ScopeAdmin is the admin scope.
const ScopeAdmin Scope = "admin"

// ErrInvalidScope is wrapped by every error ParseScopes returns.
var ErrInvalidScope = errors.New("invalid scope")

// Scopes is a key's set of scopes.
type Scopes []Scope

// ParseScopes validates scopes written as strings, dropping duplicates and
// keeping the order. An empty list is valid and allows nothing.
func ParseScopes(in []string) (Scopes, error) {
	out := make(Scopes, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, s := range in {
		if err := validScope(s); err != nil {
			return nil, err
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, Scope(s))
		}
	}
	return out, nil
}

func validScope(s string) error {
	if s == string(ScopeAdmin) {
		return nil
	}
	verb, pattern, ok := strings.Cut(s, ":")
	if !ok || (verb != "submit" && verb != "read") {
		return fmt.Errorf("%w: %q: want admin, submit:PATTERN or read:PATTERN", ErrInvalidScope, s)
	}
	if err := events.ValidPattern(pattern); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrInvalidScope, s, err)
	}
	return nil
}

// IsAdmin reports whether the scopes include admin.
func (s Scopes) IsAdmin() bool {
	for _, sc := range s {
		if sc == ScopeAdmin {
			return true
		}
	}
	return false
}

// CanSubmit reports whether a submit scope matches routingKey.
func (s Scopes) CanSubmit(routingKey string) bool { return s.matches("submit:", routingKey) }

// CanRead reports whether the scopes allow reading a request with
// routingKey: admin, or a read scope that matches it.
func (s Scopes) CanRead(routingKey string) bool {
	return s.IsAdmin() || s.matches("read:", routingKey)
}

func (s Scopes) matches(prefix, routingKey string) bool {
	for _, sc := range s {
		if pattern, ok := strings.CutPrefix(string(sc), prefix); ok && events.Match(pattern, routingKey) {
			return true
		}
	}
	return false
}

// Strings returns the scopes as strings; never nil, so it encodes as [].
func (s Scopes) Strings() []string {
	out := make([]string, len(s))
	for i, sc := range s {
		out[i] = string(sc)
	}
	return out
}

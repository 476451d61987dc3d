package events

import (
	"errors"
	"fmt"
	"strings"
)

// MaxPatternBytes is the longest topic pattern accepted: an AMQP binding key
// is a short string, at most 255 bytes.
const MaxPatternBytes = 255

// ErrInvalidPattern is wrapped by every error ValidPattern returns.
var ErrInvalidPattern = errors.New("invalid topic pattern")

// ValidPattern reports whether p is a topic pattern a subscriber may use:
// dot-separated words, each either *, # or 1 to 255 bytes without '.', '*'
// or '#', the whole at most 255 bytes.
//
// RabbitMQ itself accepts more (empty words, "a*b" taken literally), but a
// subscriber who writes "workflow.*create" almost certainly means a wildcard
// the broker would not apply, so it is refused rather than silently never
// matched.
func ValidPattern(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: the pattern is empty", ErrInvalidPattern)
	case len(p) > MaxPatternBytes:
		return fmt.Errorf("%w: the pattern is %d bytes; at most %d are allowed", ErrInvalidPattern, len(p), MaxPatternBytes)
	}
	for i, w := range strings.Split(p, ".") {
		switch {
		case w == "*" || w == "#":
		case w == "":
			return fmt.Errorf("%w: word %d of %q is empty", ErrInvalidPattern, i+1, p)
		case strings.ContainsAny(w, "*#"):
			return fmt.Errorf("%w: word %q mixes a wildcard with other characters; * and # must be whole words", ErrInvalidPattern, w)
		}
	}
	return nil
}

// Match reports whether routingKey matches the topic pattern exactly as a
// RabbitMQ topic exchange decides it (AMQP 0-9-1): words are separated by
// dots, * matches exactly one word and # matches zero or more words. An
// empty routing key has no words, so only patterns made of # alone match
// it; a trailing ".#" may match nothing, so "a.#" matches "a".
func Match(pattern, routingKey string) bool {
	return matchWords(splitWords(pattern), splitWords(routingKey))
}

// splitWords splits a key or pattern into its words the way RabbitMQ does:
// the empty string has no words, and every dot separates two (possibly
// empty) words.
func splitWords(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// matchWords matches key words against pattern words. It is the classic
// glob matcher with # for the star and * for the single-character wildcard:
// on a mismatch it backtracks to the last # and lets it swallow one more
// word. Only the last # ever needs revisiting, so this is O(len(p)·len(k))
// at worst and allocation-free.
func matchWords(p, k []string) bool {
	pi, ki := 0, 0
	star, starKey := -1, 0 // the last # seen, and the key word it resumes at
	for ki < len(k) {
		switch {
		case pi < len(p) && p[pi] == "#":
			star, starKey = pi, ki
			pi++
		case pi < len(p) && (p[pi] == "*" || p[pi] == k[ki]):
			pi++
			ki++
		case star >= 0:
			starKey++
			pi, ki = star+1, starKey
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == "#" {
		pi++
	}
	return pi == len(p)
}

package rules

import (
	"regexp"
	"strings"
)

// Rule is one loaded rule: when an event from Source satisfies the
// condition, the actions run in order.
type Rule struct {
	Name        string
	Description string
	// Source names the source whose events the rule watches.
	Source string
	// File is the rule file the rule was loaded from.
	File string
	// When is the condition's CEL text.
	When    string
	Actions []Action

	when *expr
}

// ActionKinds lists the kinds of the rule's actions, in order.
func (r *Rule) ActionKinds() []string {
	kinds := make([]string, len(r.Actions))
	for i, a := range r.Actions {
		kinds[i] = a.Kind()
	}
	return kinds
}

// SourceConfig is one named source of a rule set. Exactly one of AMQP,
// Hook, Directory and UDP is set.
type SourceConfig struct {
	Name string
	// File is the rule file that defines the source.
	File      string
	AMQP      *AMQPSource
	Hook      *HookSource
	Directory *DirectorySource
	UDP       *UDPSource
}

// Kind is the source's kind: amqp, hook, directory or udp.
func (s SourceConfig) Kind() string {
	switch {
	case s.AMQP != nil:
		return "amqp"
	case s.Hook != nil:
		return "hook"
	case s.Directory != nil:
		return "directory"
	case s.UDP != nil:
		return "udp"
	}
	return ""
}

// AMQPSource takes the events published to Exchange with a routing key that
// matches one of Bindings (topic patterns).
type AMQPSource struct {
	Exchange string   `yaml:"exchange" json:"exchange"`
	Bindings []string `yaml:"bindings" json:"bindings"`
}

// HookSource takes JSON POSTs to /v1/hooks/{source}.
type HookSource struct{}

// DirectorySource turns files that appear in Path, with a base name that
// matches Pattern (filepath.Match syntax, default "*"), into events.
type DirectorySource struct {
	Path    string `yaml:"path" json:"path"`
	Pattern string `yaml:"pattern" json:"pattern"`
}

// UDPSource turns datagrams received on Address (host:port) into events.
type UDPSource struct {
	Address string `yaml:"address" json:"address"`
}

// Set is a validated rule set: the named sources and rules of one or more
// rule files. Rule and source names are unique across the set, and every
// rule's source is one of Sources.
type Set struct {
	Sources map[string]SourceConfig
	Rules   []*Rule
	// Files are the files the set was loaded from, in load order.
	Files []string
}

// Rule returns the rule named name, or nil.
func (s *Set) Rule(name string) *Rule {
	if s == nil {
		return nil
	}
	for _, r := range s.Rules {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// namePattern is what rule and source names look like: they appear in URL
// paths (/v1/rules/{name}, /v1/hooks/{source}) and in event sources.
var namePattern = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

// Routing keys of requests follow the gateway's rules: one to eight words
// of 1 to 64 characters of A-Z, a-z, 0-9, _ and -, joined by dots.
var routingWord = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

const maxRoutingWords = 8

// validRequestKey reports whether key is a routing key the gateway accepts
// for a request.
func validRequestKey(key string) bool {
	words := strings.Split(key, ".")
	if len(words) > maxRoutingWords {
		return false
	}
	for _, w := range words {
		if !routingWord.MatchString(w) {
			return false
		}
	}
	return true
}

// maxAMQPShortString is AMQP's limit on exchange names and routing keys.
const maxAMQPShortString = 255

package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// LoadDir loads every *.yaml and *.yml file of dir, in name order, as one
// rule set. A directory without rule files gives an empty set.
func LoadDir(dir string) (*Set, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read rule directory: %w", err)
	}
	var paths []string
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.Type().IsRegular() || e.Type()&os.ModeSymlink != 0 {
			if ext == ".yaml" || ext == ".yml" {
				paths = append(paths, filepath.Join(dir, e.Name()))
			}
		}
	}
	slices.Sort(paths)
	return LoadFiles(paths...)
}

// LoadFiles loads the rule files paths as one rule set. Every problem found
// is reported, each naming its file, the rule or source, and the field,
// e.g.
//
//	rules/capability.yaml: rule "capability-status": actions[1].request.routing_key: "a..b" is not a routing key
//
// The errors are joined with errors.Join, one per line.
func LoadFiles(paths ...string) (*Set, error) {
	l := &loader{
		set:        &Set{Sources: map[string]SourceConfig{}},
		ruleFiles:  map[string]string{},
		sourceFile: map[string]string{},
	}
	for _, p := range paths {
		l.set.Files = append(l.set.Files, p)
		b, err := os.ReadFile(p)
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		l.file(p, b)
	}
	// Rules may name a source of another file: check once all are loaded.
	for _, ref := range l.refs {
		if _, ok := l.set.Sources[ref.source]; !ok {
			if _, defined := l.sourceFile[ref.source]; !defined {
				ref.at.errf("source", "no source %q is defined", ref.source)
			}
		}
	}
	if len(l.errs) > 0 {
		return nil, errors.Join(l.errs...)
	}
	return l.set, nil
}

// loader collects a set and every error found on the way.
type loader struct {
	set        *Set
	errs       []error
	ruleFiles  map[string]string // rule name → file
	sourceFile map[string]string // source name → file
	refs       []sourceRef
}

// sourceRef is a rule's reference to a source, checked once every file is
// loaded.
type sourceRef struct {
	at     at
	source string
}

// at is where in a file a problem is: file, then "rule "x"" or "source
// "x"" (or rules[i] before a rule has a usable name).
type at struct {
	l     *loader
	file  string
	scope string
}

// errf records an error at field (a path such as actions[1].request.body;
// empty for the scope itself).
func (a at) errf(field, format string, args ...any) {
	var b strings.Builder
	b.WriteString(a.file)
	b.WriteString(": ")
	if a.scope != "" {
		b.WriteString(a.scope)
		b.WriteString(": ")
	}
	if field != "" {
		b.WriteString(field)
		b.WriteString(": ")
	}
	b.WriteString(fmt.Sprintf(format, args...))
	a.l.errs = append(a.l.errs, errors.New(b.String()))
}

// file loads one rule file.
func (l *loader) file(path string, b []byte) {
	top := at{l: l, file: path}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return // an empty file defines nothing
		}
		top.errf("", "%v", err)
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		top.errf("", "a rule file holds one YAML document")
		return
	}
	root := deref(&doc)
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return
		}
		root = deref(root.Content[0])
	}
	if isNull(root) {
		return
	}
	fields, ok := mapping(top, "", root, "sources", "rules")
	if !ok {
		return
	}
	if n := fields["sources"]; n != nil {
		l.sources(top, n)
	}
	if n := fields["rules"]; n != nil {
		l.rules(top, n)
	}
}

// sources loads the sources mapping of a file.
func (l *loader) sources(top at, n *yaml.Node) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		top.errf("sources", "must be a mapping of source names to sources")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		name := n.Content[i].Value
		a := at{l: l, file: top.file, scope: fmt.Sprintf("source %q", name)}
		if !namePattern.MatchString(name) {
			a.errf("", "the name must be 1 to 64 characters of a-z, 0-9 and -")
			continue
		}
		if prev, dup := l.sourceFile[name]; dup {
			a.errf("", "is already defined in %s", prev)
			continue
		}
		l.sourceFile[name] = top.file
		sc, ok := l.source(a, deref(n.Content[i+1]))
		if !ok {
			continue
		}
		sc.Name, sc.File = name, top.file
		l.set.Sources[name] = sc
	}
}

// source loads one source definition.
func (l *loader) source(a at, n *yaml.Node) (SourceConfig, bool) {
	kinds := []string{"amqp", "hook", "directory", "udp"}
	fields, ok := mapping(a, "", n, kinds...)
	if !ok {
		return SourceConfig{}, false
	}
	var set []string
	for _, k := range kinds {
		if _, ok := fields[k]; ok {
			set = append(set, k)
		}
	}
	if len(set) != 1 {
		a.errf("", "must have exactly one of amqp, hook, directory and udp")
		return SourceConfig{}, false
	}
	kind := set[0]
	body := fields[kind]
	var sc SourceConfig
	before := len(l.errs)
	switch kind {
	case "amqp":
		f, ok := mapping(a, "amqp", body, "exchange", "bindings")
		if !ok {
			return sc, false
		}
		src := &AMQPSource{}
		src.Exchange = requiredString(a, "amqp.exchange", f["exchange"])
		if len(src.Exchange) > maxAMQPShortString {
			a.errf("amqp.exchange", "is longer than 255 bytes")
		}
		src.Bindings = stringList(a, "amqp.bindings", f["bindings"])
		if f["bindings"] != nil && len(src.Bindings) == 0 {
			a.errf("amqp.bindings", "at least one binding is required")
		}
		for i, b := range src.Bindings {
			if b == "" || len(b) > maxAMQPShortString {
				a.errf(fmt.Sprintf("amqp.bindings[%d]", i), "%q is not a binding pattern (1 to 255 bytes)", b)
			}
		}
		sc.AMQP = src
	case "hook":
		// hook: {} or a bare hook: — a hook has no settings.
		if !isNull(body) {
			if _, ok := mapping(a, "hook", body); !ok {
				return sc, false
			}
		}
		sc.Hook = &HookSource{}
	case "directory":
		f, ok := mapping(a, "directory", body, "path", "pattern")
		if !ok {
			return sc, false
		}
		src := &DirectorySource{Pattern: "*"}
		src.Path = requiredString(a, "directory.path", f["path"])
		if p := f["pattern"]; p != nil {
			src.Pattern = requiredString(a, "directory.pattern", p)
			if _, err := filepath.Match(src.Pattern, ""); err != nil {
				a.errf("directory.pattern", "%q is not a file name pattern: %v", src.Pattern, err)
			}
		}
		sc.Directory = src
	case "udp":
		f, ok := mapping(a, "udp", body, "address")
		if !ok {
			return sc, false
		}
		src := &UDPSource{Address: requiredString(a, "udp.address", f["address"])}
		if src.Address != "" {
			if _, port, err := net.SplitHostPort(src.Address); err != nil {
				a.errf("udp.address", "%q is not host:port", src.Address)
			} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
				a.errf("udp.address", "%q has no port between 1 and 65535", src.Address)
			}
		}
		sc.UDP = src
	}
	return sc, len(l.errs) == before
}

// rules loads the rules sequence of a file.
func (l *loader) rules(top at, n *yaml.Node) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		top.errf("rules", "must be a list of rules")
		return
	}
	for i, item := range n.Content {
		l.rule(top, i, deref(item))
	}
}

// rule loads one rule.
func (l *loader) rule(top at, i int, n *yaml.Node) {
	a := at{l: l, file: top.file, scope: fmt.Sprintf("rules[%d]", i)}
	// Errors name the rule once it has a usable name, so read that first.
	if name := ruleName(n); namePattern.MatchString(name) {
		a.scope = fmt.Sprintf("rule %q", name)
	}
	before := len(l.errs)
	fields, ok := mapping(a, "", n, "name", "description", "source", "when", "actions")
	if !ok {
		return
	}
	r := &Rule{File: top.file}
	if f := fields["name"]; f == nil {
		a.errf("name", "is required")
	} else if name, ok := scalar(a, "name", f); ok {
		switch {
		case !namePattern.MatchString(name):
			a.errf("name", "%q must be 1 to 64 characters of a-z, 0-9 and -", name)
		default:
			r.Name = name
			if prev, dup := l.ruleFiles[name]; dup {
				a.errf("name", "is already used by a rule in %s", prev)
			} else {
				l.ruleFiles[name] = top.file
			}
		}
	}
	r.Description = requiredString(a, "description", fields["description"])
	r.Source = requiredString(a, "source", fields["source"])
	if r.Source != "" && !namePattern.MatchString(r.Source) {
		a.errf("source", "%q is not a source name", r.Source)
		r.Source = ""
	}
	r.When = requiredString(a, "when", fields["when"])
	if r.When != "" {
		e, err := compile(r.When, resultBool)
		if err != nil {
			a.errf("when", "%v", err)
		}
		r.when = e
	}
	if f := fields["actions"]; f == nil {
		a.errf("actions", "at least one action is required")
	} else if f.Kind != yaml.SequenceNode || len(f.Content) == 0 {
		a.errf("actions", "must be a list of at least one action")
	} else {
		for j, item := range f.Content {
			if act := l.action(a, fmt.Sprintf("actions[%d]", j), deref(item)); act != nil {
				r.Actions = append(r.Actions, act)
			}
		}
	}
	if r.Source != "" {
		l.refs = append(l.refs, sourceRef{at: a, source: r.Source})
	}
	if len(l.errs) == before {
		l.set.Rules = append(l.set.Rules, r)
	}
}

// ruleName returns the value of a rule mapping's name field, or "".
func ruleName(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if v := deref(n.Content[i+1]); n.Content[i].Value == "name" && v.Kind == yaml.ScalarNode {
			return v.Value
		}
	}
	return ""
}

// actionKinds are the keys an action may have, one of them.
var actionKinds = []string{"publish", "request", "http"}

// httpMethods are the methods an http action may use.
var httpMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// reservedHeaders are set by the http action itself.
var reservedHeaders = []string{"Content-Type", "Content-Length", "Idempotency-Key", "Host"}

// maxRetries bounds an action's retries.
const maxRetries = 10

// action loads one action.
func (l *loader) action(a at, path string, n *yaml.Node) Action {
	fields, ok := mapping(a, path, n, actionKinds...)
	if !ok {
		return nil
	}
	if len(fields) != 1 {
		a.errf(path, "must have exactly one of publish, request and http")
		return nil
	}
	before := len(l.errs)
	var act Action
	switch {
	case fields["publish"] != nil:
		p := path + ".publish"
		f, ok := mapping(a, p, fields["publish"], "exchange", "routing_key", "type", "data", "retries")
		if !ok {
			return nil
		}
		pa := &PublishAction{}
		pa.Exchange = requiredString(a, p+".exchange", f["exchange"])
		if len(pa.Exchange) > maxAMQPShortString {
			a.errf(p+".exchange", "is longer than 255 bytes")
		}
		pa.RoutingKey = requiredString(a, p+".routing_key", f["routing_key"])
		pa.routingKey = compileField(a, p+".routing_key", pa.RoutingKey, resultString)
		pa.Type = requiredString(a, p+".type", f["type"])
		if f["data"] != nil {
			pa.Data = requiredString(a, p+".data", f["data"])
			pa.data = compileField(a, p+".data", pa.Data, resultJSON)
		}
		pa.MaxRetries = retries(a, p+".retries", f["retries"])
		act = pa
	case fields["request"] != nil:
		p := path + ".request"
		f, ok := mapping(a, p, fields["request"], "routing_key", "body", "timeout", "retries")
		if !ok {
			return nil
		}
		ra := &RequestAction{}
		ra.RoutingKey = requiredString(a, p+".routing_key", f["routing_key"])
		if ra.RoutingKey != "" && !validRequestKey(ra.RoutingKey) {
			a.errf(p+".routing_key", "%q is not a routing key", ra.RoutingKey)
		}
		ra.Body = requiredString(a, p+".body", f["body"])
		ra.body = compileField(a, p+".body", ra.Body, resultJSON)
		if t := f["timeout"]; t != nil {
			if s, ok := scalar(a, p+".timeout", t); ok {
				d, err := time.ParseDuration(s)
				switch {
				case err != nil:
					a.errf(p+".timeout", "%q is not a duration such as 30s or 1h", s)
				case d <= 0:
					a.errf(p+".timeout", "must be positive")
				default:
					ra.Timeout = d
				}
			}
		}
		ra.MaxRetries = retries(a, p+".retries", f["retries"])
		act = ra
	case fields["http"] != nil:
		p := path + ".http"
		f, ok := mapping(a, p, fields["http"], "method", "url", "headers", "body", "retries")
		if !ok {
			return nil
		}
		ha := &HTTPAction{Method: http.MethodPost}
		if m := f["method"]; m != nil {
			if s, ok := scalar(a, p+".method", m); ok {
				if !slices.Contains(httpMethods, strings.ToUpper(s)) {
					a.errf(p+".method", "%q is not one of %s", s, strings.Join(httpMethods, ", "))
				}
				ha.Method = strings.ToUpper(s)
			}
		}
		ha.URL = requiredString(a, p+".url", f["url"])
		ha.url = compileField(a, p+".url", ha.URL, resultString)
		if h := f["headers"]; h != nil && !isNull(h) {
			if h.Kind != yaml.MappingNode {
				a.errf(p+".headers", "must be a mapping of header names to expressions")
			} else {
				ha.Headers = map[string]string{}
				ha.headers = map[string]*expr{}
				for i := 0; i+1 < len(h.Content); i += 2 {
					name := h.Content[i].Value
					hp := p + ".headers." + name
					switch {
					case !validHeaderName(name):
						a.errf(hp, "%q is not a header name", name)
					case slices.Contains(reservedHeaders, http.CanonicalHeaderKey(name)):
						a.errf(hp, "is set by the action itself")
					default:
						v := requiredString(a, hp, h.Content[i+1])
						ha.Headers[name] = v
						ha.headers[name] = compileField(a, hp, v, resultString)
					}
				}
			}
		}
		if f["body"] != nil {
			ha.Body = requiredString(a, p+".body", f["body"])
			ha.body = compileField(a, p+".body", ha.Body, resultJSON)
		}
		ha.MaxRetries = retries(a, p+".retries", f["retries"])
		act = ha
	}
	if len(l.errs) != before {
		return nil
	}
	return act
}

// compileField compiles the expression of a field, recording an error.
func compileField(a at, field, text string, want resultKind) *expr {
	if text == "" {
		return nil // requiredString has said so
	}
	e, err := compile(text, want)
	if err != nil {
		a.errf(field, "%v", err)
		return nil
	}
	return e
}

// retries reads an optional retry count.
func retries(a at, field string, n *yaml.Node) *int {
	if n == nil {
		return nil
	}
	s, ok := scalar(a, field, n)
	if !ok {
		return nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 || v > maxRetries {
		a.errf(field, "must be a whole number from 0 to %d", maxRetries)
		return nil
	}
	return &v
}

// validHeaderName reports whether s is an HTTP header name (an RFC 9110
// token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// deref follows aliases.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is YAML null (an absent value).
func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// mapping reads n as a mapping whose keys are among allowed, recording an
// error for any other key (and going on with the known ones, so one pass
// finds every problem). The values are returned by key; ok is false when n
// is not a mapping.
func mapping(a at, field string, n *yaml.Node, allowed ...string) (map[string]*yaml.Node, bool) {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		if len(allowed) == 0 {
			a.errf(field, "must be an empty mapping ({})")
		} else {
			a.errf(field, "must be a mapping with the fields %s", strings.Join(allowed, ", "))
		}
		return nil, false
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if !slices.Contains(allowed, k) {
			a.errf(field, "unknown field %q", k)
			continue
		}
		out[k] = deref(n.Content[i+1])
	}
	return out, true
}

// scalar reads n as a scalar (any tag but null: `when: true` is the text
// "true").
func scalar(a at, field string, n *yaml.Node) (string, bool) {
	if n == nil || isNull(n) {
		a.errf(field, "is required")
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		a.errf(field, "must be a single value, not a list or mapping")
		return "", false
	}
	return n.Value, true
}

// requiredString reads a non-empty scalar, recording an error if absent or
// empty.
func requiredString(a at, field string, n *yaml.Node) string {
	s, ok := scalar(a, field, n)
	if !ok {
		return ""
	}
	if strings.TrimSpace(s) == "" {
		a.errf(field, "is required")
		return ""
	}
	return s
}

// stringList reads a list of scalars.
func stringList(a at, field string, n *yaml.Node) []string {
	if n == nil || isNull(n) {
		a.errf(field, "is required")
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		a.errf(field, "must be a list")
		return nil
	}
	var out []string
	for i, item := range n.Content {
		if s, ok := scalar(a, fmt.Sprintf("%s[%d]", field, i), deref(item)); ok {
			out = append(out, s)
		}
	}
	return out
}

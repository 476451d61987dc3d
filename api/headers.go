package api

import (
	"errors"
	"fmt"
	"mime"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/events"
)

// Limits on routing paths (CONTRACT §1).
const (
	maxSegments = 8
)

var segmentRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// reservedFirstSegments are the gateway's own paths: a POST under them is
// never a request.
var reservedFirstSegments = map[string]bool{"v1": true, "healthz": true, "readyz": true, "metrics": true, "ui": true}

// isReserved reports whether path belongs to the gateway itself. It compares
// whole segments: /healthz/x is reserved, /healthzcheck/run is a request.
func isReserved(path string) bool {
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return reservedFirstSegments[first]
}

// routingKey maps a request path to its routing key: /workflow/create →
// workflow.create.
func routingKey(path string) (string, *Problem) {
	trimmed := strings.TrimPrefix(path, "/")
	if trimmed == "" {
		return "", errInvalidPath("the path names no routing key")
	}
	segs := strings.Split(trimmed, "/")
	if len(segs) > maxSegments {
		return "", errInvalidPath("the path has " + strconv.Itoa(len(segs)) + " segments; at most 8 are allowed")
	}
	for _, s := range segs {
		if !segmentRE.MatchString(s) {
			return "", errInvalidPath("path segment " + strconv.Quote(s) + " must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -")
		}
	}
	return strings.Join(segs, "."), nil
}

// checkJSONContentType accepts application/json and application/*+json.
func checkJSONContentType(header string) *Problem {
	if header == "" {
		return errUnsupportedMediaType("Content-Type is missing; send application/json")
	}
	mt, params, err := mime.ParseMediaType(header)
	if err != nil {
		return errUnsupportedMediaType("Content-Type " + strconv.Quote(header) + " cannot be parsed")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return errUnsupportedMediaType("only the utf-8 charset is accepted")
	}
	if mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return errUnsupportedMediaType("Content-Type " + mt + " is not JSON; send application/json")
}

// parseMessageID reads an optional Message-ID header.
func parseMessageID(v string) (uuid.UUID, bool, *Problem) {
	if v == "" {
		return uuid.Nil, false, nil
	}
	id, err := parseUUID(strings.TrimSpace(v))
	if err != nil || id == uuid.Nil {
		return uuid.Nil, false, errInvalidHeader("Message-ID must be a UUID in its canonical 8-4-4-4-12 form")
	}
	return id, true, nil
}

// parseUUID accepts only the canonical 36-character form, so one request
// has one spelling of its id.
func parseUUID(v string) (uuid.UUID, error) {
	if len(v) != 36 {
		return uuid.Nil, errors.New("not a canonical UUID")
	}
	return uuid.Parse(v)
}

// parseTime reads an optional Time header: Unix milliseconds.
func parseTime(v string) (int64, bool, *Problem) {
	if v == "" {
		return 0, false, nil
	}
	t, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || t <= 0 || t > 1<<53 {
		return 0, false, errInvalidHeader("Time must be a positive integer of Unix milliseconds")
	}
	return t, true, nil
}

// parseTimeout reads an optional Request-Timeout header: whole seconds,
// at least 1 and at most max.
func parseTimeout(v string, def, max time.Duration) (time.Duration, *Problem) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 1 {
		return 0, errInvalidHeader("Request-Timeout must be a whole number of seconds, at least 1")
	}
	if n > int64(max/time.Second) {
		return 0, errInvalidHeader("Request-Timeout may be at most " + strconv.FormatInt(int64(max/time.Second), 10) + " seconds")
	}
	return time.Duration(n) * time.Second, nil
}

// parseWebhook reads an optional Reply-To header: an absolute http(s) URL.
func parseWebhook(v string) (string, *Problem) {
	if v == "" {
		return "", nil
	}
	u, err := url.Parse(strings.TrimSpace(v))
	if err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
		return "", errInvalidHeader("Reply-To must be an absolute http or https URL without credentials")
	}
	if len(v) > 2048 {
		return "", errInvalidHeader("Reply-To is longer than 2048 characters")
	}
	return u.String(), nil
}

// preferWait reads the wait preference of a Prefer header (RFC 7240).
// Preferences that cannot be honoured are ignored, as the RFC asks.
func preferWait(headers []string) (int, bool) {
	for _, h := range headers {
		for _, pref := range strings.Split(h, ",") {
			name, value, ok := strings.Cut(strings.TrimSpace(pref), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			value, _, _ = strings.Cut(value, ";")
			n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(value), `"`))
			if err != nil || n < 0 {
				continue
			}
			return n, true
		}
	}
	return 0, false
}

// parseWait reads the ?wait= query parameter: whole seconds, capped by max.
func parseWait(v string, max time.Duration) (time.Duration, *Problem) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errInvalidParameter("wait must be a whole number of seconds, 0 or more")
	}
	return waitSeconds(n, max), nil
}

// waitSeconds turns n seconds into a duration capped at max, without the
// overflow a plain multiplication has for very large n.
func waitSeconds(n int, max time.Duration) time.Duration {
	if int64(n) >= int64(max/time.Second) {
		return max
	}
	return time.Duration(n) * time.Second
}

// parseExpectReplies reads an optional Expect-Replies header: a whole
// number from 1 to 100 (how many distinct responders' replies to gather),
// or "all" (every reply until the deadline). Absent is 1.
func parseExpectReplies(v string) (int, *Problem) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 1, nil
	}
	if strings.EqualFold(v, "all") {
		return correlation.ExpectAll, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > correlation.MaxExpectReplies {
		return 0, errInvalidHeader("Expect-Replies must be a whole number from 1 to " +
			strconv.Itoa(correlation.MaxExpectReplies) + ", or all")
	}
	return n, nil
}

// RouteExpect is a route-level default of Expect-Replies.
type RouteExpect struct {
	// Pattern is an AMQP topic pattern over routing keys (survey.#).
	Pattern string
	// N is the number of replies, 1 to 100, or correlation.ExpectAll.
	N int
}

func (e RouteExpect) validate() error {
	if err := events.ValidPattern(e.Pattern); err != nil {
		return fmt.Errorf("expect replies: %w", err)
	}
	if e.N != correlation.ExpectAll && (e.N < 1 || e.N > correlation.MaxExpectReplies) {
		return fmt.Errorf("expect replies for %s: %d is not 1 to %d or all", e.Pattern, e.N, correlation.MaxExpectReplies)
	}
	return nil
}

// ParseRouteExpect reads route-level Expect-Replies defaults written as
// pattern=N or pattern=all, comma-separated: "survey.#=3,census.#=all".
// Earlier entries win.
func ParseRouteExpect(s string) ([]RouteExpect, error) {
	var out []RouteExpect
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		pattern, value, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("expect replies: %q is not pattern=N or pattern=all", item)
		}
		n, p := parseExpectReplies(value)
		if p != nil || strings.TrimSpace(value) == "" {
			return nil, fmt.Errorf("expect replies: %q: want 1 to %d or all", item, correlation.MaxExpectReplies)
		}
		e := RouteExpect{Pattern: strings.TrimSpace(pattern), N: n}
		if err := e.validate(); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// defaultExpect is the Expect-Replies of a request to key that sent none.
func defaultExpect(routes []RouteExpect, key string) int {
	for _, e := range routes {
		if events.Match(e.Pattern, key) {
			return e.N
		}
	}
	return 1
}

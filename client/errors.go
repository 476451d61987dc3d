package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// problemPrefix begins the type of every problem the gateway answers.
const problemPrefix = "urn:switchboard:problem:"

// maxProblemSize bounds the error bodies the client reads.
const maxProblemSize = 64 << 10

// ErrWaitTimeout is returned (wrapped) by Wait and Do when their timeout
// passes before the request ends; the record they return with it is the
// last one read.
var ErrWaitTimeout = errors.New("client: the request did not end within the wait")

// Error is an error answer of the gateway: an RFC 9457 problem, or any
// other non-2xx answer (then Type is empty and Title the status text).
type Error struct {
	Status int    // the HTTP status
	Type   string // urn:switchboard:problem:<kind>
	Title  string
	Detail string
	// RetryAfter is the answer's Retry-After (429 and 503 answers), zero
	// when it had none.
	RetryAfter time.Duration
}

// Error describes the problem.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "switchboard: HTTP %d", e.Status)
	if k := e.Kind(); k != "" {
		b.WriteString(" " + k)
	}
	switch {
	case e.Detail != "":
		b.WriteString(": " + e.Detail)
	case e.Title != "":
		b.WriteString(": " + e.Title)
	}
	return b.String()
}

// Kind is the problem's kind, the part of Type after
// urn:switchboard:problem: (e.g. not-found), or "" for an answer that was
// not a switchboard problem.
func (e *Error) Kind() string {
	k, ok := strings.CutPrefix(e.Type, problemPrefix)
	if !ok {
		return ""
	}
	return k
}

// Temporary reports whether the same call may succeed later: 429, 502,
// 504, and 503 except unroutable (a submit the broker returned, which
// fails again until a queue is bound).
func (e *Error) Temporary() bool {
	switch e.Status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
		return true
	case http.StatusServiceUnavailable:
		return e.Kind() != "unroutable"
	}
	return false
}

// readError makes an *Error of a non-2xx answer.
func readError(res *http.Response) error {
	e := &Error{Status: res.StatusCode, RetryAfter: retryAfter(res.Header.Get("Retry-After"), time.Now())}
	body, _ := io.ReadAll(io.LimitReader(res.Body, maxProblemSize))
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Detail string `json:"detail"`
	}
	if (mt == "application/problem+json" || mt == "application/json") && json.Unmarshal(body, &p) == nil && p.Type != "" {
		e.Type, e.Title, e.Detail = p.Type, p.Title, p.Detail
		return e
	}
	e.Title = http.StatusText(res.StatusCode)
	if s := strings.TrimSpace(string(body)); s != "" && len(s) <= 200 {
		e.Detail = s
	}
	return e
}

// retryAfter reads a Retry-After value: delay seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// AsError returns the *Error in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

func hasStatus(err error, status int) bool {
	e, ok := AsError(err)
	return ok && e.Status == status
}

func hasKind(err error, kind string) bool {
	e, ok := AsError(err)
	return ok && e.Kind() == kind
}

// IsNotFound reports whether err is a 404: no such request (or one of
// another project).
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsUnauthorized reports whether err is a 401: no valid key or token.
func IsUnauthorized(err error) bool { return hasStatus(err, http.StatusUnauthorized) }

// IsForbidden reports whether err is a 403: the key lacks the scope.
func IsForbidden(err error) bool { return hasStatus(err, http.StatusForbidden) }

// IsInvalid reports whether err is a 400: a malformed path, header, body
// or parameter (Kind says which).
func IsInvalid(err error) bool { return hasStatus(err, http.StatusBadRequest) }

// IsConflict reports whether err is a 409: a Message-ID reused with
// another body, or a cancel of a request that already ended.
func IsConflict(err error) bool { return hasStatus(err, http.StatusConflict) }

// IsRateLimited reports whether err is a 429; its RetryAfter says when to
// call again.
func IsRateLimited(err error) bool { return hasStatus(err, http.StatusTooManyRequests) }

// IsUnroutable reports whether the broker returned the request: no queue
// is bound for its routing key.
func IsUnroutable(err error) bool { return hasKind(err, "unroutable") }

// IsTemporary reports whether err is worth retrying: an *Error that is
// Temporary, or a failure to reach the gateway at all. Context errors are
// not temporary.
func IsTemporary(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if e, ok := AsError(err); ok {
		return e.Temporary()
	}
	if errors.Is(err, errLostCall) || errors.Is(err, errStreamBroken) {
		return true
	}
	var ue *url.Error
	return errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF)
}

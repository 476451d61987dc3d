package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/httpjson"
	"github.com/switchboard-gw/switchboard/webhook"
)

// problemTypeBase prefixes every problem type; the suffixes are listed in
// openapi.yaml.
const problemTypeBase = "urn:switchboard:problem:"

// Problem is an RFC 9457 problem detail, and an error so handlers can return it.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	// RetryAfter, in seconds, is sent as the Retry-After header when set.
	RetryAfter int `json:"-"`
}

func (p *Problem) Error() string { return p.Title + ": " + p.Detail }

func problem(status int, kind, title, detail string) *Problem {
	return &Problem{Type: problemTypeBase + kind, Title: title, Status: status, Detail: detail}
}

// Errors the handlers build. Each names its problem type.
func errInvalidHeader(detail string) *Problem {
	return problem(http.StatusBadRequest, "invalid-header", "Invalid header", detail)
}
func errInvalidJSON(detail string) *Problem {
	return problem(http.StatusBadRequest, "invalid-json", "Invalid JSON body", detail)
}
func errInvalidPath(detail string) *Problem {
	return problem(http.StatusBadRequest, "invalid-path", "Invalid request path", detail)
}
func errInvalidParameter(detail string) *Problem {
	return problem(http.StatusBadRequest, "invalid-parameter", "Invalid query parameter", detail)
}
func errUnsupportedMediaType(detail string) *Problem {
	return problem(http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type", detail)
}
func errBodyTooLarge(limit int64) *Problem {
	return problem(http.StatusRequestEntityTooLarge, "body-too-large", "Body too large",
		"the body is larger than the limit of "+strconv.FormatInt(limit, 10)+" bytes; large payloads are refused, never truncated")
}
func errNotFound(detail string) *Problem {
	return problem(http.StatusNotFound, "not-found", "Not found", detail)
}

// writeError is the one place errors become HTTP statuses and problem types.
func writeError(w http.ResponseWriter, err error) {
	var p *Problem
	switch {
	case errors.As(err, &p):
	case authProblem(err) != nil:
		p = authProblem(err)
	case errors.Is(err, correlation.ErrNotFound):
		p = errNotFound("no request has this id")
	case errors.Is(err, correlation.ErrConflict):
		p = problem(http.StatusConflict, "message-id-conflict", "Message-ID already used",
			"a request with this Message-ID exists with a different routing key or body")
	case errors.Is(err, webhook.ErrNoDelivery):
		p = errNotFound("this request has no webhook delivery: it has no Reply-To, or it has not ended yet")
	case errors.Is(err, webhook.ErrNotRetryable):
		p = problem(http.StatusConflict, "delivery-not-failed", "Delivery has not failed",
			"only a delivery that gave up can be retried; this one is pending or delivered")
	case errors.Is(err, correlation.ErrUnavailable):
		p = problem(http.StatusServiceUnavailable, "unavailable", "Service unavailable",
			"the correlation store cannot be reached; try again later")
		p.RetryAfter = 5
	default:
		p = problem(http.StatusInternalServerError, "internal", "Internal error", "the gateway failed to handle the request")
	}
	writeProblem(w, p)
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	httpjson.WriteProblem(w, (*httpjson.Problem)(p))
}

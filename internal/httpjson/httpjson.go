// Package httpjson writes the JSON and problem+json answers of the
// packages that serve HTTP beside package api (auth, rules), in the same
// shape as api's, without importing it.
package httpjson

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Problem is an RFC 9457 problem detail: type is
// urn:switchboard:problem:<kind>, as everywhere in the API.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	// RetryAfter, in seconds, is sent as the Retry-After header when set.
	RetryAfter int `json:"-"`
}

// NewProblem returns the problem of kind.
func NewProblem(status int, kind, title, detail string) *Problem {
	return &Problem{Type: "urn:switchboard:problem:" + kind, Title: title, Status: status, Detail: detail}
}

// WriteProblem answers p as application/problem+json.
func WriteProblem(w http.ResponseWriter, p *Problem) {
	if p.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// WriteJSON answers v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

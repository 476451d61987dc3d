// Package claim is the wire form of a claim check (CONTRACT §8): the small
// JSON body an AMQP message carries instead of content too large to travel
// inline, and the header that marks such a message. The gateway writes
// claims; the responder SDK and the HTTP client read them.
package claim

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// Header is the AMQP header that marks a message whose body is a claim;
// its value is 1.
const Header = "switchboard-claim"

// Claim says where content is and how to check it.
type Claim struct {
	// URL is the content's path on the gateway, /v1/blobs/{id}.
	URL string `json:"url"`
	// Size is the content's length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the content's SHA-256, lowercase hex.
	SHA256 string `json:"sha256"`
	// ContentType is the content's media type as the client sent it.
	ContentType string `json:"content_type"`
}

type envelope struct {
	Claim *Claim `json:"claim"`
}

// Body returns c as a message body: {"claim": {...}}.
func (c Claim) Body() []byte {
	b, err := json.Marshal(envelope{Claim: &c})
	if err != nil {
		panic(err) // strings and an integer always marshal
	}
	return b
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Parse reads a claim body, checking that it is complete.
func Parse(body []byte) (Claim, error) {
	var e envelope
	if err := json.Unmarshal(body, &e); err != nil {
		return Claim{}, fmt.Errorf("read claim: %w", err)
	}
	switch c := e.Claim; {
	case c == nil:
		return Claim{}, fmt.Errorf("read claim: no claim object")
	case c.URL == "":
		return Claim{}, fmt.Errorf("read claim: no url")
	case c.Size < 0:
		return Claim{}, fmt.Errorf("read claim: negative size")
	case !sha256Hex.MatchString(c.SHA256):
		return Claim{}, fmt.Errorf("read claim: sha256 is not 64 lowercase hex digits")
	default:
		return *c, nil
	}
}

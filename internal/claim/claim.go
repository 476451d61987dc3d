// Package claim is the wire form of a claim check (CONTRACT §8): the small
// JSON body an AMQP message carries instead of content too large to travel
// inline, and the header that marks such a message. The gateway writes
// claims; the responder SDK and the HTTP client read them.
package claim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
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

// ErrMismatch means content did not have the size or the SHA-256 its
// claim announced.
var ErrMismatch = errors.New("content does not match its claim")

// Verify returns a reader of content that hashes it as it is read and,
// at its end, fails with ErrMismatch instead of io.EOF if the content is
// not what c announced (also as soon as it runs past c.Size).
func Verify(content io.ReadCloser, c Claim) io.ReadCloser {
	return &verifying{body: content, want: c, sum: sha256.New()}
}

type verifying struct {
	body io.ReadCloser
	want Claim
	sum  hash.Hash
	n    int64
}

func (v *verifying) Read(p []byte) (int, error) {
	n, err := v.body.Read(p)
	v.sum.Write(p[:n])
	v.n += int64(n)
	if v.n > v.want.Size {
		return n, fmt.Errorf("%w: more than %d bytes", ErrMismatch, v.want.Size)
	}
	if errors.Is(err, io.EOF) {
		if v.n != v.want.Size {
			return n, fmt.Errorf("%w: %d bytes read, %d claimed", ErrMismatch, v.n, v.want.Size)
		}
		if got := hex.EncodeToString(v.sum.Sum(nil)); got != v.want.SHA256 {
			return n, fmt.Errorf("%w: sha-256 %s, claimed %s", ErrMismatch, got, v.want.SHA256)
		}
	}
	return n, err
}

func (v *verifying) Close() error { return v.body.Close() }

package webhook

import (
	"net/http"
	"time"

	"github.com/switchboard-gw/switchboard/webhook/signature"
)

// Signing and verifying live in package signature (standard library only,
// for receivers and the client SDK); these are its names here, where the
// dispatcher and the configuration use them.

// The Standard Webhooks headers.
const (
	HeaderID        = signature.HeaderID
	HeaderTimestamp = signature.HeaderTimestamp
	HeaderSignature = signature.HeaderSignature
)

// DefaultTolerance and MaxBodySize are signature's.
const (
	DefaultTolerance = signature.DefaultTolerance
	MaxBodySize      = signature.MaxBodySize
)

// The sentinel errors of Verify.
var (
	ErrMissingHeaders = signature.ErrMissingHeaders
	ErrTimestamp      = signature.ErrTimestamp
	ErrSignature      = signature.ErrSignature
)

// Secret is an HMAC-SHA256 signing key that never shows its key.
type Secret = signature.Secret

// ParseSecret reads one whsec_ secret.
func ParseSecret(s string) (Secret, error) { return signature.ParseSecret(s) }

// ParseSecrets reads secrets separated by commas or white space.
func ParseSecrets(s string) ([]Secret, error) { return signature.ParseSecrets(s) }

// NewSecret returns a new random secret as whsec_ text.
func NewSecret() (string, error) { return signature.NewSecret() }

// Sign returns the webhook-signature value of a message.
func Sign(id string, ts time.Time, body []byte, secrets ...Secret) string {
	return signature.Sign(id, ts, body, secrets...)
}

// Headers returns the Standard Webhooks headers of a message.
func Headers(id string, ts time.Time, body []byte, secrets ...Secret) http.Header {
	return signature.Headers(id, ts, body, secrets...)
}

// Verify checks a received webhook's headers and body.
func Verify(h http.Header, body []byte, now time.Time, tolerance time.Duration, secrets ...Secret) error {
	return signature.Verify(h, body, now, tolerance, secrets...)
}

// VerifyRequest reads and verifies a received webhook's body.
func VerifyRequest(r *http.Request, secrets ...Secret) ([]byte, error) {
	return signature.VerifyRequest(r, secrets...)
}

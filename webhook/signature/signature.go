// Package signature signs and verifies webhooks by the Standard Webhooks
// specification (https://www.standardwebhooks.com): the webhook-id,
// webhook-timestamp and webhook-signature headers, "v1," HMAC-SHA256
// signatures with whsec_ secrets, several at once during a rotation. It
// needs nothing beyond the standard library, so a receiver (or the client
// SDK) can verify without importing the gateway's delivery machinery, which
// lives in package webhook.
package signature

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"        // the message id, the same on every attempt
	HeaderTimestamp = "webhook-timestamp" // when the attempt was made, Unix seconds
	HeaderSignature = "webhook-signature" // space-separated "v1,<base64>" signatures
)

// Secret limits, from the Standard Webhooks specification.
const (
	secretPrefix  = "whsec_"
	minSecretSize = 24 // bytes: 192 bits
	maxSecretSize = 64 // bytes: 512 bits
	newSecretSize = 32
	redacted      = secretPrefix + "<redacted>"
)

// DefaultTolerance is how far a webhook-timestamp may be from the
// receiver's clock when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// MaxBodySize is the largest body VerifyRequest reads.
const MaxBodySize = 10 << 20

// Sentinel errors of Verify; the returned errors wrap them with detail.
var (
	// ErrMissingHeaders means a Standard Webhooks header is missing or empty.
	ErrMissingHeaders = errors.New("webhook: missing signature headers")
	// ErrTimestamp means the timestamp is malformed or outside the tolerance.
	ErrTimestamp = errors.New("webhook: timestamp outside the tolerance")
	// ErrSignature means no v1 signature matches any of the secrets.
	ErrSignature = errors.New("webhook: no matching signature")
)

// Secret is an HMAC-SHA256 signing key. It never prints, logs or marshals
// its key: every form of it reads whsec_<redacted>. The zero Secret has no
// key; Sign skips it and Verify never accepts a signature by it.
type Secret struct {
	// newMAC returns an HMAC-SHA256 keyed with the secret. The key lives
	// only in this closure: fmt prints a struct holding a Secret in an
	// unexported field by reflection, without calling Format, and a func
	// shows as an address where a []byte (even behind a pointer) would
	// show its bytes.
	newMAC func() hash.Hash
}

// ParseSecret reads a secret in the Standard Webhooks form, whsec_ followed
// by the standard (padded) base64 of the key; the bare base64 is accepted
// too. The key must be 24 to 64 bytes.
func ParseSecret(s string) (Secret, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), secretPrefix))
	if err != nil {
		// The decoder's error is not wrapped: a message should not carry
		// any part of a secret, and its offset would tell where to look.
		return Secret{}, errors.New("webhook: the secret is not whsec_ followed by standard base64")
	}
	if len(key) < minSecretSize || len(key) > maxSecretSize {
		return Secret{}, fmt.Errorf("webhook: the secret's key is %d bytes; it must be %d to %d bytes", len(key), minSecretSize, maxSecretSize)
	}
	return Secret{newMAC: func() hash.Hash { return hmac.New(sha256.New, key) }}, nil
}

// ParseSecrets reads a list of secrets separated by commas and/or white
// space. During a rotation list both the new and the old secret: every
// delivery is signed with all of them, so a receiver holding either one
// verifies. An empty string gives no secrets.
func ParseSecrets(s string) ([]Secret, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	secrets := make([]Secret, 0, len(fields))
	for i, f := range fields {
		secret, err := ParseSecret(f)
		if err != nil {
			return nil, fmt.Errorf("secret %d of %d: %w", i+1, len(fields), err)
		}
		secrets = append(secrets, secret)
	}
	return secrets, nil
}

// NewSecret returns a fresh random secret of 32 bytes in its whsec_ form.
func NewSecret() (string, error) {
	key := make([]byte, newSecretSize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("webhook: new secret: %w", err)
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// String returns whsec_<redacted>.
func (s Secret) String() string { return redacted }

// GoString returns whsec_<redacted>, so %#v hides the key too.
func (s Secret) GoString() string { return redacted }

// Format writes whsec_<redacted> whatever the verb, so %x or %+v cannot
// reach the key.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// MarshalText returns whsec_<redacted>.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MarshalJSON returns the JSON string whsec_<redacted>.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(redacted)), nil }

// LogValue returns whsec_<redacted>, for slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// mac returns the HMAC-SHA256 of id.timestamp.body under the secret.
func (s Secret) mac(id string, unix int64, body []byte) []byte {
	h := s.newMAC()
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(nil, unix, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Sign returns the webhook-signature value for a message: "v1,<base64
// HMAC-SHA256 of id.timestamp.body>" for each secret, separated by single
// spaces. The timestamp is taken in whole Unix seconds. id must not contain
// a full stop, as the specification asks, or the signed content becomes
// ambiguous.
func Sign(id string, ts time.Time, body []byte, secrets ...Secret) string {
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		if s.newMAC != nil {
			sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(s.mac(id, ts.Unix(), body)))
		}
	}
	return strings.Join(sigs, " ")
}

// Headers returns the Standard Webhooks headers of a message: webhook-id,
// webhook-timestamp and webhook-signature.
func Headers(id string, ts time.Time, body []byte, secrets ...Secret) http.Header {
	h := make(http.Header, 3)
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, Sign(id, ts, body, secrets...))
	return h
}

// maxTimestamp bounds webhook-timestamp (about the year 36812) so that the
// arithmetic on it cannot overflow.
const maxTimestamp = 1 << 40

// Verify checks a received webhook: the three headers are present, the
// timestamp is within tolerance of now (DefaultTolerance when tolerance is 0
// or less), and one of the v1 signatures is that of one of the secrets.
// Signatures of other versions are ignored. The error wraps
// ErrMissingHeaders, ErrTimestamp or ErrSignature.
func Verify(h http.Header, body []byte, now time.Time, tolerance time.Duration, secrets ...Secret) error {
	if missing := missingHeaders(h); len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrMissingHeaders, strings.Join(missing, ", "))
	}
	ts, err := checkTimestamp(header(h, HeaderTimestamp), now, tolerance)
	if err != nil {
		return err
	}
	if matchSignature(header(h, HeaderSignature), header(h, HeaderID), ts, body, secrets) {
		return nil
	}
	return fmt.Errorf("%w: none of the v1 signatures is that of a known secret", ErrSignature)
}

// missingHeaders names the absent or empty ones of the three headers.
func missingHeaders(h http.Header) []string {
	var missing []string
	for _, name := range []string{HeaderID, HeaderTimestamp, HeaderSignature} {
		if header(h, name) == "" {
			missing = append(missing, name)
		}
	}
	return missing
}

// header returns the first value of a header, found under its canonical
// key (as net/http stores received headers) or its lower-case spelling (as
// a hand-built header may have it).
func header(h http.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	if vs := h[name]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// checkTimestamp parses webhook-timestamp and checks it against now.
func checkTimestamp(text string, now time.Time, tolerance time.Duration) (int64, error) {
	ts, err := strconv.ParseInt(strings.TrimSpace(text), 10, 64)
	if err != nil || ts < 0 || ts > maxTimestamp {
		return 0, fmt.Errorf("%w: %s is not a whole number of Unix seconds", ErrTimestamp, HeaderTimestamp)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	age := now.Sub(time.Unix(ts, 0))
	switch {
	case age > tolerance:
		return 0, fmt.Errorf("%w: the message is %s old; at most %s is accepted", ErrTimestamp, age.Truncate(time.Second), tolerance)
	case age < -tolerance:
		return 0, fmt.Errorf("%w: the message is %s in the future; at most %s is accepted", ErrTimestamp, (-age).Truncate(time.Second), tolerance)
	}
	return ts, nil
}

// matchSignature reports whether one of the v1 signatures in the
// webhook-signature value is that of one of the secrets.
func matchSignature(header, id string, ts int64, body []byte, secrets []Secret) bool {
	var expected [][]byte
	for _, s := range secrets {
		if s.newMAC != nil {
			expected = append(expected, s.mac(id, ts, body))
		}
	}
	for _, versioned := range strings.Fields(header) {
		version, sig, ok := strings.Cut(versioned, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		for _, want := range expected {
			if hmac.Equal(got, want) {
				return true
			}
		}
	}
	return false
}

// VerifyRequest reads the body of a received webhook, at most MaxBodySize
// bytes, and verifies it with Verify, the current time and
// DefaultTolerance. It returns the body only when it is authentic. A body
// over the limit gives an *http.MaxBytesError.
func VerifyRequest(r *http.Request, secrets ...Secret) ([]byte, error) {
	var body []byte
	if r.Body != nil {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBodySize))
		if err != nil {
			return nil, fmt.Errorf("webhook: read body: %w", err)
		}
	}
	if err := Verify(r.Header, body, time.Now(), DefaultTolerance, secrets...); err != nil {
		return nil, err
	}
	return body, nil
}

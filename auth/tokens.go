package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-gw/switchboard/correlation"
)

// Read tokens let a web page follow the one request it submitted (its
// record, reply and events) without holding an API key: EventSource cannot
// send an Authorization header, so the token travels as ?access_token=. A
// token is short-lived, names its project and request, and is signed with a
// secret every instance shares, so any instance verifies what another
// minted. It cannot be revoked; its short life is what bounds a leak.
//
// The format is
//
//	sbt_<base64url(payload)>.<base64url(HMAC-SHA256(secret, payload))>
//
// with unpadded base64url and a 41-byte payload: version (1 byte, 1),
// project id (16), request id (16), expiry in unix seconds (8, big-endian).

const (
	// TokenPrefix starts every read token, so one is told from an API key
	// at a glance (and by secret scanners).
	TokenPrefix = "sbt_"
	// DefaultTokenTTL is how long a read token is valid when no ttl is given.
	DefaultTokenTTL = 15 * time.Minute

	// tokenScope reads every routing key: the token is bounded by its
	// request id, not by a pattern.
	tokenScope Scope = "read:#"

	tokenVersion     = 1
	tokenPayloadSize = 1 + 16 + 16 + 8
	tokenSecretName  = "read-token"
	tokenSecretSize  = 32
)

// tokenEncoding is strict, so two spellings never decode to the same bytes:
// changing any character of a token makes it invalid.
var tokenEncoding = base64.RawURLEncoding.Strict()

// Tokens mints and verifies read tokens. It is safe for concurrent use.
type Tokens struct {
	secret []byte
	ttl    time.Duration
}

// NewTokens returns Tokens signing with secret; ttl <= 0 means
// DefaultTokenTTL. Servers use LoadTokens, so every instance shares the
// secret; tests use this.
func NewTokens(secret []byte, ttl time.Duration) *Tokens {
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	return &Tokens{secret: append([]byte(nil), secret...), ttl: ttl}
}

// LoadTokens reads the signing secret shared by every instance from
// gateway_secrets, making it first if no instance has. Instances starting
// together agree: only one insert wins, and each reads the winner back.
func LoadTokens(ctx context.Context, pool *pgxpool.Pool, ttl time.Duration) (*Tokens, error) {
	fresh := make([]byte, tokenSecretSize)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO gateway_secrets (name, secret) VALUES ($1, $2)
		ON CONFLICT (name) DO NOTHING`, tokenSecretName, fresh); err != nil {
		return nil, correlation.DBError("store read-token secret", err)
	}
	var secret []byte
	if err := pool.QueryRow(ctx, `SELECT secret FROM gateway_secrets WHERE name = $1`, tokenSecretName).Scan(&secret); err != nil {
		return nil, correlation.DBError("load read-token secret", err)
	}
	return NewTokens(secret, ttl), nil
}

// TTL is how long the tokens Mint makes are valid.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// Mint returns a token that reads request requestID of project projectID
// until expires (now + the ttl, to the second).
func (t *Tokens) Mint(projectID, requestID uuid.UUID, now time.Time) (token string, expires time.Time) {
	expires = now.Add(t.ttl).Truncate(time.Second)
	payload := make([]byte, 0, tokenPayloadSize)
	payload = append(payload, tokenVersion)
	payload = append(payload, projectID[:]...)
	payload = append(payload, requestID[:]...)
	payload = binary.BigEndian.AppendUint64(payload, uint64(expires.Unix()))
	return TokenPrefix + tokenEncoding.EncodeToString(payload) + "." + tokenEncoding.EncodeToString(t.mac(payload)), expires
}

// Verify checks a token's signature and expiry, and returns the principal
// it stands for: the token's project, with RequestID set and the scope
// read:#. The scope alone would read the whole project: whoever serves a
// request must also check that Principal.RequestID is that request. Any
// flaw answers ErrUnauthorized, without saying which.
func (t *Tokens) Verify(token string) (Principal, error) {
	return t.verify(token, time.Now())
}

func (t *Tokens) verify(token string, now time.Time) (Principal, error) {
	rest, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok {
		return Principal{}, ErrUnauthorized
	}
	p64, m64, ok := strings.Cut(rest, ".")
	if !ok {
		return Principal{}, ErrUnauthorized
	}
	payload, err := tokenEncoding.DecodeString(p64)
	if err != nil || len(payload) != tokenPayloadSize || payload[0] != tokenVersion {
		return Principal{}, ErrUnauthorized
	}
	mac, err := tokenEncoding.DecodeString(m64)
	if err != nil || !hmac.Equal(mac, t.mac(payload)) {
		return Principal{}, ErrUnauthorized
	}
	var project, request uuid.UUID
	copy(project[:], payload[1:17])
	copy(request[:], payload[17:33])
	expires := int64(binary.BigEndian.Uint64(payload[33:]))
	if now.Unix() >= expires || request == uuid.Nil {
		return Principal{}, ErrUnauthorized
	}
	return Principal{ProjectID: project, RequestID: request, Scopes: Scopes{tokenScope}}, nil
}

func (t *Tokens) mac(payload []byte) []byte {
	h := hmac.New(sha256.New, t.secret)
	h.Write(payload)
	return h.Sum(nil)
}

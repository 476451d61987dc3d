package auth_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/auth"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	tokens := auth.NewTokens(testSecret, 0)
	require.Equal(t, auth.DefaultTokenTTL, tokens.TTL())
	project, request := uuid.New(), uuid.New()
	now := time.Now()
	token, expires := tokens.Mint(project, request, now)
	require.True(t, strings.HasPrefix(token, auth.TokenPrefix), token)
	require.WithinDuration(t, now.Add(15*time.Minute), expires, time.Second)
	require.NotContains(t, token, "=", "unpadded, so it needs no escaping in a URL")

	p, err := tokens.Verify(token)
	require.NoError(t, err)
	require.Equal(t, auth.Principal{ProjectID: project, RequestID: request, Scopes: auth.Scopes{"read:#"}}, p)
	require.False(t, p.Operator())
	require.False(t, p.CanSubmit("a.b"))
	require.True(t, p.CanRead(project, request, "any.key"))
	require.False(t, p.CanRead(project, uuid.New(), "any.key"), "a token reads its one request only")
	require.False(t, p.CanRead(uuid.New(), request, "any.key"))
}

// Changing any character of a token, or cutting it, makes it invalid.
func TestTokenTamperedIsRefused(t *testing.T) {
	t.Parallel()
	tokens := auth.NewTokens(testSecret, time.Hour)
	token, _ := tokens.Mint(uuid.New(), uuid.New(), time.Now())
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
	for i := range len(token) {
		for _, c := range []byte(alphabet) {
			if c == token[i] {
				continue
			}
			tampered := token[:i] + string(c) + token[i+1:]
			_, err := tokens.Verify(tampered)
			require.ErrorIs(t, err, auth.ErrUnauthorized, "position %d changed to %q: %s", i, c, tampered)
		}
		_, err := tokens.Verify(token[:i] + token[i+1:])
		require.ErrorIs(t, err, auth.ErrUnauthorized, "position %d removed", i)
	}
	_, err := tokens.Verify(token + "A")
	require.ErrorIs(t, err, auth.ErrUnauthorized)
}

func TestTokenExpires(t *testing.T) {
	t.Parallel()
	tokens := auth.NewTokens(testSecret, time.Minute)
	token, expires := tokens.Mint(uuid.New(), uuid.New(), time.Now().Add(-61*time.Second))
	require.True(t, expires.Before(time.Now()))
	_, err := tokens.Verify(token)
	require.ErrorIs(t, err, auth.ErrUnauthorized)

	token, _ = tokens.Mint(uuid.New(), uuid.New(), time.Now().Add(-50*time.Second))
	_, err = tokens.Verify(token)
	require.NoError(t, err, "ten seconds left")
}

func TestTokenFromAnotherSecretIsRefused(t *testing.T) {
	t.Parallel()
	other := auth.NewTokens([]byte("another secret, another gateway!"), time.Hour)
	token, _ := other.Mint(uuid.New(), uuid.New(), time.Now())
	_, err := auth.NewTokens(testSecret, time.Hour).Verify(token)
	require.ErrorIs(t, err, auth.ErrUnauthorized)
}

func TestTokenGarbageIsRefused(t *testing.T) {
	t.Parallel()
	tokens := auth.NewTokens(testSecret, time.Hour)
	good, _ := tokens.Mint(uuid.New(), uuid.New(), time.Now())
	payload, mac, _ := strings.Cut(strings.TrimPrefix(good, auth.TokenPrefix), ".")
	for _, garbage := range []string{
		"", "sbt_", "sbt_.", "sbt_..", "sb_" + payload + "." + mac, strings.TrimPrefix(good, auth.TokenPrefix),
		"sbt_" + payload, "sbt_" + payload + ".", "sbt_." + mac, "sbt_" + mac + "." + payload,
		"sbt_" + payload + "." + mac + "." + mac, "sbt_" + payload + "=." + mac,
		"sbt_" + payload[:len(payload)-4] + "." + mac, "Bearer " + good, " " + good, good + " ",
		"sbt_!!!!.????", strings.Repeat("sbt_", 1000),
	} {
		_, err := tokens.Verify(garbage)
		require.ErrorIs(t, err, auth.ErrUnauthorized, "%q", garbage)
	}
}

// Every instance loads the same secret, made once even when they start
// together, so a token minted by one verifies on all.
func TestLoadTokensSharesOneSecret(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testsvc.Database(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	const instances = 8
	loaded := make([]*auth.Tokens, instances)
	var wg sync.WaitGroup
	errs := make([]error, instances)
	for i := range instances {
		wg.Go(func() { loaded[i], errs[i] = auth.LoadTokens(ctx, pool, 0) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	project, request := uuid.New(), uuid.New()
	token, _ := loaded[0].Mint(project, request, time.Now())
	for _, tk := range loaded {
		p, err := tk.Verify(token)
		require.NoError(t, err)
		require.Equal(t, request, p.RequestID)
	}
	var n int
	var size int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), max(length(secret)) FROM gateway_secrets WHERE name = 'read-token'`).Scan(&n, &size))
	require.Equal(t, 1, n)
	require.Equal(t, 32, size)

	// A gateway with a fresh database signs differently.
	_, err = auth.NewTokens(testSecret, 0).Verify(token)
	require.ErrorIs(t, err, auth.ErrUnauthorized)
}

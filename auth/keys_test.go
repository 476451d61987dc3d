package auth

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// testClock is a clock the key tests move by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newKeyStore returns a Store over a fresh database, and its pool.
func newKeyStore(t *testing.T) (*Store, *pgxpool.Pool) {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), testsvc.Database(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s := NewStore(pool, nil)
	t.Cleanup(s.Close)
	return s, pool
}

func TestProjects(t *testing.T) {
	t.Parallel()
	s, _ := newKeyStore(t)
	ctx := t.Context()

	p, err := s.CreateProject(ctx, "acme-1")
	require.NoError(t, err)
	require.Equal(t, "acme-1", p.Name)
	require.NotEqual(t, uuid.Nil, p.ID)
	require.WithinDuration(t, time.Now(), p.CreatedAt, time.Minute)

	_, err = s.CreateProject(ctx, "acme-1")
	require.ErrorIs(t, err, ErrExists)
	for _, bad := range []string{"", "-a", "Acme", "a_b", "a b", strings.Repeat("a", 64), "é"} {
		_, err = s.CreateProject(ctx, bad)
		require.ErrorIs(t, err, ErrInvalid, "%q", bad)
	}
	_, err = s.CreateProject(ctx, strings.Repeat("a", 63))
	require.NoError(t, err)

	all, err := s.Projects(ctx)
	require.NoError(t, err)
	require.Len(t, all, 3)
	require.Equal(t, []string{strings.Repeat("a", 63), "acme-1", "default"}, []string{all[0].Name, all[1].Name, all[2].Name})
	require.Equal(t, DefaultProject, all[2].ID)

	got, err := s.Project(ctx, p.ID)
	require.NoError(t, err)
	require.Equal(t, p.Name, got.Name)
	got, err = s.ProjectByName(ctx, "default")
	require.NoError(t, err)
	require.Equal(t, DefaultProject, got.ID)
	_, err = s.Project(ctx, uuid.New())
	require.ErrorIs(t, err, ErrNotFound)
	_, err = s.ProjectByName(ctx, "nope")
	require.ErrorIs(t, err, ErrNotFound)
}

func TestKeyLifecycle(t *testing.T) {
	t.Parallel()
	s, pool := newKeyStore(t)
	ctx := t.Context()
	proj, err := s.CreateProject(ctx, "acme")
	require.NoError(t, err)

	k, secret, err := s.CreateKey(ctx, NewKey{ProjectID: proj.ID, Name: "ci", Scopes: Scopes{"submit:a.#", "read:a.#"}})
	require.NoError(t, err)
	require.Regexp(t, `^sb_[A-Za-z0-9_-]{43}$`, secret)
	require.Equal(t, secret[:10], k.Prefix)
	require.Equal(t, "acme", k.ProjectName)
	require.Nil(t, k.ExpiresAt)

	// Only the hash is stored.
	var stored []byte
	var prefix string
	require.NoError(t, pool.QueryRow(ctx, `SELECT hash, prefix FROM api_keys WHERE id = $1`, k.ID).Scan(&stored, &prefix))
	require.Len(t, stored, 32)
	require.Equal(t, k.Prefix, prefix)
	require.NotContains(t, string(stored), secret[10:])

	p, err := s.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, Principal{ProjectID: proj.ID, ProjectName: "acme", KeyID: k.ID, Scopes: Scopes{"submit:a.#", "read:a.#"}}, p)

	// last_used_at is set in the background.
	s.bg.Wait()
	var lastUsed *time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT last_used_at FROM api_keys WHERE id = $1`, k.ID).Scan(&lastUsed))
	require.NotNil(t, lastUsed)

	// The second call comes from the cache: a change to the row is not seen yet.
	_, err = pool.Exec(ctx, `UPDATE api_keys SET scopes = '["read:zzz"]' WHERE id = $1`, k.ID)
	require.NoError(t, err)
	p, err = s.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, Scopes{"submit:a.#", "read:a.#"}, p.Scopes)

	keys, err := s.Keys(ctx, proj.ID, false)
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.Equal(t, k.ID, keys[0].ID)
	require.True(t, keys[0].Active(time.Now()))

	// A revocation clears the cache at once.
	require.NoError(t, s.RevokeKey(ctx, proj.ID, k.ID, false))
	_, err = s.Authenticate(ctx, secret)
	require.ErrorIs(t, err, ErrUnauthorized)
	require.NoError(t, s.RevokeKey(ctx, proj.ID, k.ID, false), "revoking twice succeeds")
	keys, err = s.Keys(ctx, proj.ID, false)
	require.NoError(t, err)
	require.NotNil(t, keys[0].RevokedAt)
	require.False(t, keys[0].Active(time.Now()))
}

func TestRevokeScope(t *testing.T) {
	t.Parallel()
	s, _ := newKeyStore(t)
	ctx := t.Context()
	a, err := s.CreateProject(ctx, "a")
	require.NoError(t, err)
	b, err := s.CreateProject(ctx, "b")
	require.NoError(t, err)
	ka, secretA, err := s.CreateKey(ctx, NewKey{ProjectID: a.ID, Name: "a", Scopes: Scopes{"read:#"}})
	require.NoError(t, err)
	_, _, err = s.CreateKey(ctx, NewKey{ProjectID: b.ID, Name: "b", Scopes: Scopes{"admin"}})
	require.NoError(t, err)

	require.ErrorIs(t, s.RevokeKey(ctx, b.ID, ka.ID, false), ErrNotFound, "another project's key")
	require.ErrorIs(t, s.RevokeKey(ctx, a.ID, uuid.New(), false), ErrNotFound)
	_, err = s.Authenticate(ctx, secretA)
	require.NoError(t, err)

	all, err := s.Keys(ctx, uuid.Nil, true)
	require.NoError(t, err)
	require.Len(t, all, 2)
	none, err := s.Keys(ctx, DefaultProject, false)
	require.NoError(t, err)
	require.Empty(t, none)

	require.NoError(t, s.RevokeKey(ctx, DefaultProject, ka.ID, true), "an operator revokes any key")
	_, err = s.Authenticate(ctx, secretA)
	require.ErrorIs(t, err, ErrUnauthorized)
}

func TestKeyExpiry(t *testing.T) {
	t.Parallel()
	s, _ := newKeyStore(t)
	clock := &testClock{now: time.Now()}
	s.now = clock.Now
	ctx := t.Context()

	past := clock.Now().Add(-time.Second)
	_, _, err := s.CreateKey(ctx, NewKey{ProjectID: DefaultProject, Name: "old", Scopes: Scopes{"admin"}, ExpiresAt: &past})
	require.ErrorIs(t, err, ErrInvalid)

	exp := clock.Now().Add(time.Hour)
	k, secret, err := s.CreateKey(ctx, NewKey{ProjectID: DefaultProject, Name: "short", Scopes: Scopes{"admin"}, ExpiresAt: &exp})
	require.NoError(t, err)
	require.WithinDuration(t, exp, *k.ExpiresAt, time.Millisecond)
	_, err = s.Authenticate(ctx, secret)
	require.NoError(t, err)

	// Expiry is checked on every call, cached or not.
	clock.Add(time.Hour)
	_, err = s.Authenticate(ctx, secret)
	require.ErrorIs(t, err, ErrUnauthorized)
	clock.Add(time.Minute)
	_, err = s.Authenticate(ctx, secret)
	require.ErrorIs(t, err, ErrUnauthorized)
}

func TestAuthenticateRefuses(t *testing.T) {
	t.Parallel()
	s, pool := newKeyStore(t)
	ctx := t.Context()
	_, secret, err := s.CreateKey(ctx, NewKey{ProjectID: DefaultProject, Name: "real", Scopes: Scopes{"admin"}})
	require.NoError(t, err)

	// Right shape, wrong key: the last character changed.
	last := secret[len(secret)-1]
	wrong := secret[:len(secret)-1] + map[bool]string{true: "A", false: "B"}[last != 'A']
	_, err = s.Authenticate(ctx, wrong)
	require.ErrorIs(t, err, ErrUnauthorized)

	// Not shaped like a key: refused without asking the database (it is closed).
	pool.Close()
	for _, bad := range []string{"", "sb_", "hello", "Bearer " + secret, secret + "x", secret[:len(secret)-1],
		"xx_" + secret[3:], secret[:20] + "+" + secret[21:], secret[:20] + "=" + secret[21:], secret[:20] + "\x00" + secret[21:]} {
		_, err = s.Authenticate(ctx, bad)
		require.ErrorIs(t, err, ErrUnauthorized, "%q", bad)
	}
	// A well-formed key with the database away is an outage, not a refusal.
	_, err = s.Authenticate(ctx, wrong)
	require.ErrorIs(t, err, correlation.ErrUnavailable)
	require.NotErrorIs(t, err, ErrUnauthorized)
}

func TestKeyValidation(t *testing.T) {
	t.Parallel()
	s, _ := newKeyStore(t)
	ctx := t.Context()
	for _, nk := range []NewKey{
		{ProjectID: DefaultProject, Name: "", Scopes: Scopes{"admin"}},
		{ProjectID: DefaultProject, Name: "  ", Scopes: Scopes{"admin"}},
		{ProjectID: DefaultProject, Name: "a\nb", Scopes: Scopes{"admin"}},
		{ProjectID: DefaultProject, Name: strings.Repeat("n", 201), Scopes: Scopes{"admin"}},
		{ProjectID: DefaultProject, Name: "x", Scopes: nil},
		{ProjectID: DefaultProject, Name: "x", Scopes: Scopes{"root"}},
	} {
		_, _, err := s.CreateKey(ctx, nk)
		require.ErrorIs(t, err, ErrInvalid, "%+v", nk)
	}
	_, _, err := s.CreateKey(ctx, NewKey{ProjectID: uuid.New(), Name: "x", Scopes: Scopes{"admin"}})
	require.ErrorIs(t, err, ErrNotFound)
}

func TestCacheExpiresAndRevokeRace(t *testing.T) {
	t.Parallel()
	s, pool := newKeyStore(t)
	clock := &testClock{now: time.Now()}
	s.now = clock.Now
	ctx := t.Context()
	k, secret, err := s.CreateKey(ctx, NewKey{ProjectID: DefaultProject, Name: "x", Scopes: Scopes{"read:#"}})
	require.NoError(t, err)
	_, err = s.Authenticate(ctx, secret)
	require.NoError(t, err)

	// Another instance revokes: this one notices once its cache entry is old.
	_, err = pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE id = $1`, k.ID)
	require.NoError(t, err)
	_, err = s.Authenticate(ctx, secret)
	require.NoError(t, err, "within the cache TTL")
	clock.Add(cacheTTL)
	_, err = s.Authenticate(ctx, secret)
	require.ErrorIs(t, err, ErrUnauthorized)

	// A lookup that began before a revocation is not cached.
	s.mu.Lock()
	gen := s.gen
	s.gen++
	s.mu.Unlock()
	s.remember([32]byte{1}, cachedKey{readAt: clock.Now()}, gen)
	s.mu.Lock()
	_, cached := s.cache[[32]byte{1}]
	s.mu.Unlock()
	require.False(t, cached)
}

func TestCacheBounded(t *testing.T) {
	t.Parallel()
	s := NewStore(nil, nil)
	now := time.Now()
	for i := range cacheMax + 10 {
		var h [32]byte
		h[0], h[1], h[2] = byte(i), byte(i>>8), byte(i>>16)
		s.remember(h, cachedKey{readAt: now}, 0)
	}
	require.LessOrEqual(t, len(s.cache), cacheMax)
}

func TestTouchAtMostOncePerMinute(t *testing.T) {
	t.Parallel()
	s, pool := newKeyStore(t)
	clock := &testClock{now: time.Now()}
	s.now = clock.Now
	ctx := t.Context()
	k, secret, err := s.CreateKey(ctx, NewKey{ProjectID: DefaultProject, Name: "x", Scopes: Scopes{"read:#"}})
	require.NoError(t, err)
	lastUsed := func() time.Time {
		s.bg.Wait()
		var at *time.Time
		require.NoError(t, pool.QueryRow(ctx, `SELECT last_used_at FROM api_keys WHERE id = $1`, k.ID).Scan(&at))
		require.NotNil(t, at)
		return *at
	}
	_, err = s.Authenticate(ctx, secret)
	require.NoError(t, err)
	first := lastUsed()
	_, err = pool.Exec(ctx, `UPDATE api_keys SET last_used_at = $2 WHERE id = $1`, k.ID, first.Add(-time.Hour))
	require.NoError(t, err)
	_, err = s.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, first.Add(-time.Hour), lastUsed(), "not again within a minute")
	clock.Add(touchEvery)
	_, err = s.Authenticate(context.Background(), secret)
	require.NoError(t, err)
	require.True(t, lastUsed().After(first.Add(-time.Minute)))
}

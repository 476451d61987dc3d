package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-gw/switchboard/correlation"
)

// Errors of the Store. Database failures are wrapped with
// correlation.DBError, so an outage is correlation.ErrUnavailable.
var (
	// ErrUnauthorized: the key is unknown, malformed, revoked or expired.
	// Which of these is deliberately not said.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrNotFound: no such project or key (or not one the caller may see).
	ErrNotFound = errors.New("not found")
	// ErrExists: a project with this name exists.
	ErrExists = errors.New("already exists")
	// ErrInvalid: a project name, key name, scope list or expiry is not
	// acceptable; the error says why.
	ErrInvalid = errors.New("invalid")
)

const (
	// keyPrefix starts every key, so a leaked key is recognizable (secret
	// scanners) and a caller sending something else is refused at once.
	keyPrefix = "sb_"
	keyBytes  = 32 // 256 bits
	keyLen    = len(keyPrefix) + 43
	// displayPrefixLen is how much of a key is kept in clear, for people to
	// tell keys apart: "sb_" and 7 characters (42 bits), useless to guess
	// the rest.
	displayPrefixLen = 10
	maxKeyNameLen    = 200

	cacheTTL   = 10 * time.Second
	cacheMax   = 10000
	touchEvery = time.Minute
	maxTouches = 4 // concurrent last_used_at updates
)

// projectName is the migration's CHECK on projects.name.
var projectName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Project is a tenant: requests, events, deliveries and keys belong to one.
type Project struct {
	ID   uuid.UUID
	Name string
	// Limits of the project; nil means the gateway's default.
	RateRPS    *float64
	RateBurst  *int
	MaxWaiters *int
	CreatedAt  time.Time
}

// Key is an API key as stored: never the key itself, nor its hash.
type Key struct {
	ID          uuid.UUID
	ProjectID   uuid.UUID
	ProjectName string
	Name        string
	// Prefix is the key's first characters, for people to tell keys apart.
	Prefix     string
	Scopes     Scopes
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
	LastUsedAt *time.Time
}

// Active reports whether the key authenticates at now.
func (k Key) Active(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt))
}

// NewKey is what CreateKey needs.
type NewKey struct {
	ProjectID uuid.UUID
	Name      string
	Scopes    Scopes
	// ExpiresAt is when the key stops working; nil: never.
	ExpiresAt *time.Time
}

// Store keeps projects and API keys, and authenticates keys. It is safe for
// concurrent use.
//
// Authenticate caches what it read for cacheTTL (10 s), so the hot path
// does not query Postgres on every call. A revocation clears this
// instance's cache at once; other instances stop accepting the key within
// the TTL.
type Store struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	now    func() time.Time
	ttl    time.Duration

	mu       sync.Mutex
	cache    map[[sha256.Size]byte]cachedKey
	gen      uint64 // bumped by every revocation: lookups older than it are not cached
	touched  map[uuid.UUID]time.Time
	touching chan struct{}
	bg       sync.WaitGroup
}

// cachedKey is what Authenticate needs of a key row.
type cachedKey struct {
	hash        []byte
	id          uuid.UUID
	projectID   uuid.UUID
	projectName string
	scopes      Scopes
	expiresAt   *time.Time
	revokedAt   *time.Time
	readAt      time.Time
}

// NewStore returns the store over pool. logger (nil: discard) hears about
// background failures, which never fail a call.
func NewStore(pool *pgxpool.Pool, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{
		pool: pool, logger: logger, now: time.Now, ttl: cacheTTL,
		cache:    make(map[[sha256.Size]byte]cachedKey),
		touched:  make(map[uuid.UUID]time.Time),
		touching: make(chan struct{}, maxTouches),
	}
}

// Close waits for background updates of keys' last use; call it before
// closing the pool.
func (s *Store) Close() { s.bg.Wait() }

// ValidProjectName reports whether name may name a project: 1 to 63
// lowercase letters, digits and dashes, not starting with a dash.
func ValidProjectName(name string) error {
	if !projectName.MatchString(name) {
		return fmt.Errorf("%w: project name %q: want 1 to 63 lowercase letters, digits and dashes, not starting with a dash", ErrInvalid, name)
	}
	return nil
}

// CreateProject creates a project; a taken name is ErrExists.
func (s *Store) CreateProject(ctx context.Context, name string) (Project, error) {
	if err := ValidProjectName(name); err != nil {
		return Project{}, err
	}
	p, err := scanProject(s.pool.QueryRow(ctx,
		`INSERT INTO projects (id, name) VALUES ($1, $2) RETURNING `+projectColumns, uuid.New(), name))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
		return Project{}, fmt.Errorf("project %q: %w", name, ErrExists)
	}
	if err != nil {
		return Project{}, correlation.DBError("create project", err)
	}
	return p, nil
}

const projectColumns = `id, name, rate_rps, rate_burst, max_waiters, created_at`

func scanProject(row pgx.Row) (Project, error) {
	var p Project
	err := row.Scan(&p.ID, &p.Name, &p.RateRPS, &p.RateBurst, &p.MaxWaiters, &p.CreatedAt)
	return p, err
}

// Projects lists every project by name.
func (s *Store) Projects(ctx context.Context) ([]Project, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+projectColumns+` FROM projects ORDER BY name`)
	if err != nil {
		return nil, correlation.DBError("list projects", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Project, error) { return scanProject(row) })
	if err != nil {
		return nil, correlation.DBError("list projects", err)
	}
	return out, nil
}

// Project returns a project by id, or ErrNotFound.
func (s *Store) Project(ctx context.Context, id uuid.UUID) (Project, error) {
	return s.oneProject(ctx, `SELECT `+projectColumns+` FROM projects WHERE id = $1`, id)
}

// ProjectByName returns a project by name, or ErrNotFound.
func (s *Store) ProjectByName(ctx context.Context, name string) (Project, error) {
	if ValidProjectName(name) != nil {
		return Project{}, ErrNotFound // no project can have it; Postgres need not see it
	}
	return s.oneProject(ctx, `SELECT `+projectColumns+` FROM projects WHERE name = $1`, name)
}

func (s *Store) oneProject(ctx context.Context, query string, arg any) (Project, error) {
	p, err := scanProject(s.pool.QueryRow(ctx, query, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return Project{}, fmt.Errorf("project: %w", ErrNotFound)
	}
	if err != nil {
		return Project{}, correlation.DBError("get project", err)
	}
	return p, nil
}

// CreateKey creates a key and returns it with its secret, which is kept
// nowhere: show it once, it cannot be recovered. An unknown project is
// ErrNotFound.
func (s *Store) CreateKey(ctx context.Context, nk NewKey) (Key, string, error) {
	if err := validKeyName(nk.Name); err != nil {
		return Key{}, "", err
	}
	if len(nk.Scopes) == 0 {
		return Key{}, "", fmt.Errorf("%w: a key needs at least one scope (admin, submit:PATTERN or read:PATTERN)", ErrInvalid)
	}
	scopes, err := ParseScopes(nk.Scopes.Strings())
	if err != nil {
		return Key{}, "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if nk.ExpiresAt != nil && !nk.ExpiresAt.After(s.now()) {
		return Key{}, "", fmt.Errorf("%w: expires_at %s is not in the future", ErrInvalid, nk.ExpiresAt.Format(time.RFC3339))
	}
	secret, err := newSecret()
	if err != nil {
		return Key{}, "", err
	}
	sum := sha256.Sum256([]byte(secret))
	k := Key{ID: uuid.New(), ProjectID: nk.ProjectID, Name: nk.Name, Prefix: secret[:displayPrefixLen], Scopes: scopes}
	err = s.pool.QueryRow(ctx, `
		WITH p AS (SELECT id, name FROM projects WHERE id = $2),
		k AS (
			INSERT INTO api_keys (id, project_id, name, prefix, hash, scopes, expires_at)
			SELECT $1, p.id, $3, $4, $5, $6, $7 FROM p
			RETURNING created_at, expires_at
		)
		SELECT p.name, k.created_at, k.expires_at FROM p, k`,
		k.ID, nk.ProjectID, nk.Name, k.Prefix, sum[:], scopes.Strings(), nk.ExpiresAt,
	).Scan(&k.ProjectName, &k.CreatedAt, &k.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, "", fmt.Errorf("project: %w", ErrNotFound)
	}
	if err != nil {
		return Key{}, "", correlation.DBError("create key", err)
	}
	return k, secret, nil
}

func validKeyName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return fmt.Errorf("%w: a key needs a name, to tell it apart", ErrInvalid)
	case !utf8.ValidString(name) || len(name) > maxKeyNameLen:
		return fmt.Errorf("%w: a key name is valid UTF-8 of at most %d bytes", ErrInvalid, maxKeyNameLen)
	case strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("%w: a key name has no control characters", ErrInvalid)
	}
	return nil
}

// newSecret returns "sb_" and 256 random bits in base64url.
func newSecret() (string, error) {
	b := make([]byte, keyBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return keyPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// wellFormed reports whether s is shaped like a key, so anything else is
// refused without hashing or querying.
func wellFormed(s string) bool {
	if len(s) != keyLen || !strings.HasPrefix(s, keyPrefix) {
		return false
	}
	for _, c := range []byte(s[len(keyPrefix):]) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

const keyColumns = `k.id, k.project_id, p.name, k.name, k.prefix, k.scopes, k.created_at, k.expires_at, k.revoked_at, k.last_used_at`

// Keys lists the keys of projectID, or of every project when all is set,
// oldest first, revoked ones included.
func (s *Store) Keys(ctx context.Context, projectID uuid.UUID, all bool) ([]Key, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+keyColumns+` FROM api_keys k JOIN projects p ON p.id = k.project_id
		WHERE $1 OR k.project_id = $2 ORDER BY k.created_at, k.id`, all, projectID)
	if err != nil {
		return nil, correlation.DBError("list keys", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Key, error) {
		var k Key
		var scopes []string
		err := row.Scan(&k.ID, &k.ProjectID, &k.ProjectName, &k.Name, &k.Prefix, &scopes, &k.CreatedAt,
			&k.ExpiresAt, &k.RevokedAt, &k.LastUsedAt)
		k.Scopes = make(Scopes, len(scopes))
		for i, sc := range scopes {
			k.Scopes[i] = Scope(sc)
		}
		return k, err
	})
	if err != nil {
		return nil, correlation.DBError("list keys", err)
	}
	return out, nil
}

// RevokeKey revokes a key of projectID (any project's, for an operator).
// Revoking a revoked key succeeds and keeps the first revocation time; a
// key that does not exist, or is another project's, is ErrNotFound.
func (s *Store) RevokeKey(ctx context.Context, projectID, keyID uuid.UUID, operator bool) error {
	var hash []byte
	err := s.pool.QueryRow(ctx, `
		UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
		WHERE id = $1 AND ($2 OR project_id = $3) RETURNING hash`, keyID, operator, projectID).Scan(&hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("key: %w", ErrNotFound)
	}
	if err != nil {
		return correlation.DBError("revoke key", err)
	}
	s.mu.Lock()
	s.gen++
	delete(s.cache, [sha256.Size]byte(hash))
	s.mu.Unlock()
	return nil
}

// Authenticate returns the principal of a key, or ErrUnauthorized when it
// is malformed, unknown, revoked or expired; database failures are wrapped
// as by correlation.DBError.
//
// The key is hashed and looked up by its hash; an attacker steers neither
// the hash nor the lookup's timing, and the stored hash is compared with
// subtle.ConstantTimeCompare all the same.
func (s *Store) Authenticate(ctx context.Context, secret string) (Principal, error) {
	if !wellFormed(secret) {
		return Principal{}, ErrUnauthorized
	}
	sum := sha256.Sum256([]byte(secret))
	now := s.now()
	s.mu.Lock()
	k, ok := s.cache[sum]
	gen := s.gen
	s.mu.Unlock()
	if !ok || now.Sub(k.readAt) >= s.ttl {
		var err error
		if k, err = s.lookup(ctx, sum); err != nil {
			return Principal{}, err
		}
		k.readAt = now
		s.remember(sum, k, gen)
	}
	if subtle.ConstantTimeCompare(k.hash, sum[:]) != 1 {
		return Principal{}, ErrUnauthorized
	}
	if k.revokedAt != nil || (k.expiresAt != nil && !now.Before(*k.expiresAt)) {
		return Principal{}, ErrUnauthorized
	}
	s.touch(k.id, now)
	return Principal{ProjectID: k.projectID, ProjectName: k.projectName, KeyID: k.id, Scopes: k.scopes}, nil
}

func (s *Store) lookup(ctx context.Context, sum [sha256.Size]byte) (cachedKey, error) {
	var k cachedKey
	var scopes []string
	err := s.pool.QueryRow(ctx, `
		SELECT k.hash, k.id, k.project_id, p.name, k.scopes, k.expires_at, k.revoked_at
		FROM api_keys k JOIN projects p ON p.id = k.project_id WHERE k.hash = $1`, sum[:]).
		Scan(&k.hash, &k.id, &k.projectID, &k.projectName, &scopes, &k.expiresAt, &k.revokedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return cachedKey{}, ErrUnauthorized
	}
	if err != nil {
		return cachedKey{}, correlation.DBError("authenticate key", err)
	}
	if k.scopes, err = ParseScopes(scopes); err != nil {
		// Only a hand-edited row gets here; refuse the key rather than guess.
		s.logger.Warn("api key has an invalid scope; refused", "key_id", k.id, "error", err)
		return cachedKey{}, ErrUnauthorized
	}
	return k, nil
}

// remember caches k unless a revocation happened since the lookup began
// (gen): the row read may predate it.
func (s *Store) remember(sum [sha256.Size]byte, k cachedKey, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return
	}
	if len(s.cache) >= cacheMax {
		for h, c := range s.cache {
			if k.readAt.Sub(c.readAt) >= s.ttl {
				delete(s.cache, h)
			}
		}
		for h := range s.cache { // still full: drop any
			if len(s.cache) < cacheMax {
				break
			}
			delete(s.cache, h)
		}
	}
	s.cache[sum] = k
}

// touch records the key's use, at most once a minute per key, in the
// background; a failure is logged, never the caller's.
func (s *Store) touch(id uuid.UUID, now time.Time) {
	s.mu.Lock()
	if last, ok := s.touched[id]; ok && now.Sub(last) < touchEvery {
		s.mu.Unlock()
		return
	}
	select {
	case s.touching <- struct{}{}:
	default: // busy: a later call records it
		s.mu.Unlock()
		return
	}
	if len(s.touched) >= cacheMax {
		for kid, at := range s.touched {
			if now.Sub(at) >= touchEvery {
				delete(s.touched, kid)
			}
		}
	}
	s.touched[id] = now
	s.bg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.bg.Done()
		defer func() { <-s.touching }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.pool.Exec(ctx, `UPDATE api_keys SET last_used_at = now() WHERE id = $1`, id); err != nil {
			s.logger.Debug("record api key use", "key_id", id, "error", err)
		}
	}()
}

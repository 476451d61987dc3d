package correlation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Blobs are bodies too large to travel inline (CONTRACT §8, the claim
// check), kept as Postgres large objects: in the same database as the
// request they belong to, so every gateway instance serves them, and
// deleted with it (a trigger of migration 0010 unlinks the large object
// when its row goes, and another deletes a request's blobs with it).
// Content is streamed both ways, never held whole in memory.

// Blob roles: whose body a blob is.
const (
	BlobRequest = "request"
	BlobReply   = "reply"
)

// Sentinel errors of the blob store.
var (
	// ErrBlobNotFound means no blob has that id.
	ErrBlobNotFound = errors.New("blob not found")
	// ErrDigestMismatch means the content's SHA-256 is not the one the
	// uploader announced.
	ErrDigestMismatch = errors.New("content does not match its digest")
)

// Blob describes a stored body.
type Blob struct {
	ID          uuid.UUID
	RequestID   uuid.UUID
	Role        string
	Size        int64
	SHA256      []byte
	ContentType string
	CreatedAt   time.Time
}

// NewBlob is a body about to be stored.
type NewBlob struct {
	// ID names the blob; for a request's body it is the request's id, so a
	// repeated submit (same Message-ID) finds the same blob.
	ID          uuid.UUID
	RequestID   uuid.UUID
	Role        string
	ContentType string
	// WantSHA256, when set, is the digest the uploader announced: content
	// that does not match it is not kept (ErrDigestMismatch).
	WantSHA256 []byte
}

// blobChunk is how much content goes to Postgres in one lo_write: large
// enough that round trips do not dominate, small enough to keep memory flat.
const blobChunk = 256 << 10

// PutBlob streams content into a new large object and records it, in one
// transaction: if content fails to read (too large, the client left) or
// does not match WantSHA256, nothing is kept. When a blob with that id
// exists already (a repeated submit), the new copy is dropped and stored is
// false; the Blob returned describes the content just read either way, so
// the caller can tell a repeat from a different body.
func (s *Store) PutBlob(ctx context.Context, n NewBlob, content io.Reader) (b Blob, stored bool, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return Blob{}, false, dbErr("begin blob", err)
	}
	defer func() {
		if !stored {
			_ = tx.Rollback(context.WithoutCancel(ctx)) // the large object goes with it
		}
	}()
	los := tx.LargeObjects()
	oid, err := los.Create(ctx, 0)
	if err != nil {
		return Blob{}, false, dbErr("create large object", err)
	}
	lo, err := los.Open(ctx, oid, pgx.LargeObjectModeWrite)
	if err != nil {
		return Blob{}, false, dbErr("open large object", err)
	}
	sum := sha256.New()
	size, err := io.CopyBuffer(lo, io.TeeReader(content, sum), make([]byte, blobChunk))
	if err != nil {
		return Blob{}, false, fmt.Errorf("store blob: %w", err)
	}
	if err := lo.Close(); err != nil {
		return Blob{}, false, dbErr("close large object", err)
	}
	b = Blob{ID: n.ID, RequestID: n.RequestID, Role: n.Role, Size: size, SHA256: sum.Sum(nil), ContentType: n.ContentType}
	if n.WantSHA256 != nil && !bytes.Equal(n.WantSHA256, b.SHA256) {
		return Blob{}, false, ErrDigestMismatch
	}
	err = tx.QueryRow(ctx, `
		INSERT INTO blobs (id, request_id, role, content, size, sha256, content_type)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (id) DO NOTHING
		RETURNING created_at`,
		[16]byte(b.ID), [16]byte(b.RequestID), b.Role, oid, b.Size, b.SHA256, b.ContentType).Scan(&b.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return b, false, nil // a repeat: the blob that is there stays
	}
	if err != nil {
		return Blob{}, false, dbErr("record blob", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return Blob{}, false, dbErr("commit blob", err)
	}
	return b, true, nil
}

// GetBlob returns what is known about blob id, or ErrBlobNotFound.
func (s *Store) GetBlob(ctx context.Context, id uuid.UUID) (Blob, error) {
	b, _, err := getBlob(ctx, s.pool, id)
	return b, err
}

func getBlob(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id uuid.UUID) (Blob, uint32, error) {
	var b Blob
	var oid uint32
	err := q.QueryRow(ctx, `SELECT id, request_id, role, content, size, sha256, content_type, created_at FROM blobs WHERE id = $1`,
		[16]byte(id)).Scan(&b.ID, &b.RequestID, &b.Role, &oid, &b.Size, &b.SHA256, &b.ContentType, &b.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Blob{}, 0, ErrBlobNotFound
	}
	if err != nil {
		return Blob{}, 0, dbErr("read blob", err)
	}
	return b, oid, nil
}

// BlobReader reads a blob's content and seeks in it (for HTTP Range
// requests). It holds a read-only transaction, and with it a pooled
// connection, until Close.
type BlobReader struct {
	*pgx.LargeObject
	tx pgx.Tx
}

// Close ends the read.
func (r *BlobReader) Close() error {
	_ = r.LargeObject.Close()
	return r.tx.Rollback(context.Background())
}

// OpenBlob opens blob id for reading; ctx bounds the whole read. The
// caller closes the reader.
func (s *Store) OpenBlob(ctx context.Context, id uuid.UUID) (Blob, *BlobReader, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return Blob{}, nil, dbErr("begin blob read", err)
	}
	b, oid, err := getBlob(ctx, tx, id)
	if err != nil {
		_ = tx.Rollback(ctx)
		return Blob{}, nil, err
	}
	los := tx.LargeObjects()
	lo, err := los.Open(ctx, oid, pgx.LargeObjectModeRead)
	if err != nil {
		_ = tx.Rollback(ctx)
		return Blob{}, nil, dbErr("open large object", err)
	}
	return b, &BlobReader{LargeObject: lo, tx: tx}, nil
}

// DeleteBlob deletes blob id (its large object goes with it); a blob that
// is not there is no error.
func (s *Store) DeleteBlob(ctx context.Context, id uuid.UUID) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM blobs WHERE id = $1`, [16]byte(id)); err != nil {
		return dbErr("delete blob", err)
	}
	return nil
}

package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/internal/claim"
)

// Blobs is what the claim check needs from the correlation store: bodies
// streamed into storage and read back, with seeking for Range requests.
type Blobs interface {
	PutBlob(ctx context.Context, n correlation.NewBlob, content io.Reader) (correlation.Blob, bool, error)
	GetBlob(ctx context.Context, id uuid.UUID) (correlation.Blob, error)
	OpenBlob(ctx context.Context, id uuid.UUID) (correlation.Blob, *correlation.BlobReader, error)
	DeleteBlob(ctx context.Context, id uuid.UUID) error
}

// SetBlobs turns the claim check on (CONTRACT §8): request and reply
// bodies over Config.ClaimCheckBytes, up to Config.MaxBlobBytes, are stored
// in b and travel (or are kept) as claims. Call it before Handler. Without it, bodies over
// MaxBodyBytes are refused with 413 as before.
func (s *Server) SetBlobs(b Blobs) { s.blobs = b }

// blobIdle bounds how long an upload or a download of a blob may stall
// between two reads or writes. The server's ReadTimeout and the write
// deadline bound whole calls, which a 1 GiB body on a slow link outlives.
const blobIdle = 30 * time.Second

// claimCheck reports whether large bodies go by claim check.
func (s *Server) claimCheck() bool { return s.blobs != nil && s.cfg.MaxBlobBytes > 0 }

// claimThreshold is the largest body that still travels inline.
func (s *Server) claimThreshold() int64 {
	if s.cfg.ClaimCheckBytes > 0 {
		return s.cfg.ClaimCheckBytes
	}
	return s.cfg.MaxBodyBytes
}

// readSubmitBody reads a request or reply body. A body up to the inline threshold
// is returned whole, checked as readJSONBody checks it. A larger one (the
// claim check on) is returned unread as rest, capped at MaxBlobBytes, for
// storeBlob to stream once the caller has checked the caller may submit:
// nothing is stored for a call that would be refused. At most the
// threshold is held in memory, to tell a chunked body's size.
func (s *Server) readSubmitBody(w http.ResponseWriter, r *http.Request) (body []byte, rest io.Reader, p *Problem) {
	if !s.claimCheck() {
		body, p = s.readJSONBody(w, r)
		return body, nil, p
	}
	if p := checkJSONContentType(r.Header.Get("Content-Type")); p != nil {
		return nil, nil, p
	}
	if r.ContentLength > s.cfg.MaxBlobBytes {
		// Refused before a byte of it is read; the server closes the
		// connection rather than drain a body this large.
		return nil, nil, errBodyTooLarge(s.cfg.MaxBlobBytes)
	}
	limit := s.claimThreshold()
	capped := http.MaxBytesReader(w, r.Body, s.cfg.MaxBlobBytes)
	if r.ContentLength > limit {
		return nil, capped, nil
	}
	head, err := io.ReadAll(io.LimitReader(capped, limit+1))
	if err != nil {
		return nil, nil, readProblem(err, s.cfg.MaxBlobBytes)
	}
	if int64(len(head)) > limit {
		return nil, io.MultiReader(bytes.NewReader(head), capped), nil
	}
	return head, nil, s.checkJSON(head)
}

// readProblem is the answer to a body that could not be read.
func readProblem(err error, limit int64) *Problem {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return errBodyTooLarge(limit)
	}
	var deep *depthError
	if errors.As(err, &deep) {
		return errInvalidJSON(deep.Error())
	}
	return errInvalidJSON("the body could not be read: " + err.Error())
}

// storeBlob streams the rest of a large body into blob n and returns the
// claim that travels (or is kept) instead; stored is false when blob n
// existed already (a repeated submit), which is then left as it was. The content is not parsed: its
// nesting depth is checked on the way (cheaply, byte by byte), its JSON
// syntax is not, so a responder must expect a claimed body to be invalid.
// A Content-Digest or Repr-Digest header with a sha-256 (RFC 9530) is
// checked when the upload completes.
func (s *Server) storeBlob(w http.ResponseWriter, r *http.Request, n correlation.NewBlob, rest io.Reader) (claimBody []byte, stored bool, p *Problem) {
	want, p := announcedSHA256(r.Header)
	if p != nil {
		return nil, false, p
	}
	rc := http.NewResponseController(w)
	content := &depthReader{r: rest, max: s.cfg.MaxJSONDepth, touch: func() {
		_ = rc.SetReadDeadline(time.Now().Add(blobIdle))
	}}
	n.ContentType, n.WantSHA256 = r.Header.Get("Content-Type"), want
	b, stored, err := s.blobs.PutBlob(r.Context(), n, content)
	// The answer's write deadline was set when the call began (see
	// writeDeadline); a long upload must not use it up.
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.MaxWait + s.cfg.WriteTimeout))
	switch {
	case err == nil:
	case errors.Is(err, correlation.ErrDigestMismatch):
		return nil, false, problem(http.StatusBadRequest, "digest-mismatch", "Digest mismatch",
			"the body's sha-256 is not the one its Content-Digest announced; nothing was kept")
	case errors.Is(err, correlation.ErrUnavailable):
		return nil, false, problem(http.StatusServiceUnavailable, "unavailable", "Service unavailable",
			"the correlation store cannot be reached; try again later")
	default:
		return nil, false, readProblem(err, s.cfg.MaxBlobBytes)
	}
	return claim.Claim{URL: "/v1/blobs/" + n.ID.String(), Size: b.Size, SHA256: hex.EncodeToString(b.SHA256),
		ContentType: n.ContentType}.Body(), stored, nil
}

// announcedSHA256 reads the sha-256 of a Content-Digest or Repr-Digest
// header (RFC 9530: sha-256=:base64:); nil when none is announced.
func announcedSHA256(h http.Header) ([]byte, *Problem) {
	for _, name := range []string{"Content-Digest", "Repr-Digest"} {
		for _, v := range h.Values(name) {
			for _, item := range strings.Split(v, ",") {
				alg, val, ok := strings.Cut(strings.TrimSpace(item), "=")
				if !ok || !strings.EqualFold(alg, "sha-256") {
					continue
				}
				sum, err := base64.StdEncoding.DecodeString(strings.Trim(val, ":"))
				if err != nil || len(sum) != 32 {
					return nil, errInvalidHeader(name + ": sha-256 must be :base64: of 32 bytes")
				}
				return sum, nil
			}
		}
	}
	return nil, nil
}

// depthError says a streamed body nests too deeply.
type depthError struct{ max int }

func (e *depthError) Error() string {
	return "the body nests more than " + strconv.Itoa(e.max) + " levels deep"
}

// depthReader passes content through, failing once it nests deeper than
// max, and calls touch before each read (to push the read deadline on).
type depthReader struct {
	r     io.Reader
	max   int
	touch func()
	scan  depthScanner
}

func (d *depthReader) Read(p []byte) (int, error) {
	d.touch()
	n, err := d.r.Read(p)
	if d.scan.write(p[:n]) > d.max {
		return n, &depthError{max: d.max}
	}
	return n, err
}

// getBlob handles GET /v1/blobs/{id}: the content of a claim, with
// Content-Length, ETag and Repr-Digest (its sha-256) and Range requests.
// Whoever may read the request the blob belongs to may read the blob;
// anyone else is told it does not exist.
func (s *Server) getBlob(w http.ResponseWriter, r *http.Request) {
	notFound := errNotFound("no blob has this id")
	id, err := parseUUID(chi.URLParam(r, "id"))
	if err != nil || s.blobs == nil {
		writeProblem(w, notFound)
		return
	}
	meta, err := s.blobs.GetBlob(r.Context(), id)
	if errors.Is(err, correlation.ErrBlobNotFound) {
		writeProblem(w, notFound)
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	setRequestID(r.Context(), meta.RequestID)
	owner, err := s.records.Owner(r.Context(), meta.RequestID)
	switch {
	case errors.Is(err, correlation.ErrNotFound) ||
		err == nil && !caller(r).CanRead(owner.ProjectID, meta.RequestID, owner.RoutingKey):
		writeProblem(w, notFound) // an orphan, or another project's
		return
	case err != nil:
		writeError(w, err)
		return
	}
	b, content, err := s.blobs.OpenBlob(r.Context(), id)
	if errors.Is(err, correlation.ErrBlobNotFound) {
		writeProblem(w, notFound) // purged in between
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	defer content.Close()
	h := w.Header()
	if b.ContentType != "" {
		h.Set("Content-Type", b.ContentType)
	}
	h.Set("ETag", `"`+hex.EncodeToString(b.SHA256)+`"`)
	h.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(b.SHA256)+":")
	h.Set("Cache-Control", "private")
	http.ServeContent(&pacedWriter{ResponseWriter: w, rc: http.NewResponseController(w)}, r, "", b.CreatedAt, content)
}

// pacedWriter pushes the write deadline on before each write, so a large
// download is bounded by stalls, not by its length.
type pacedWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	_ = p.rc.SetWriteDeadline(time.Now().Add(blobIdle))
	return p.ResponseWriter.Write(b)
}

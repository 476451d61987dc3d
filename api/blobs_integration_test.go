package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/api"
	"github.com/switchboard-gw/switchboard/auth"
	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/responder"
)

// jsonBody returns a deterministic JSON body of exactly size bytes,
// {"data":"<letters>"}, generated as it is read: a 200 MiB body costs the
// test no 200 MiB of memory. The letters repeat with an odd period, so a
// byte served from the wrong offset changes the digest.
func jsonBody(size int64) io.Reader {
	const head, tail = `{"data":"`, `"}`
	block := make([]byte, 65521)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range block {
		block[i] = 'a' + byte(rng.IntN(26))
	}
	return io.MultiReader(strings.NewReader(head),
		&letters{block: block, left: size - int64(len(head)+len(tail))}, strings.NewReader(tail))
}

type letters struct {
	block []byte
	off   int
	left  int64
}

func (l *letters) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.block[l.off:])
		n += c
		l.off = (l.off + c) % len(l.block)
	}
	l.left -= int64(n)
	return n, nil
}

// digestOf returns the size and hex sha-256 of r's content.
func digestOf(t *testing.T, r io.Reader) (int64, string) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	require.NoError(t, err)
	return n, hex.EncodeToString(h.Sum(nil))
}

// countingReader counts what the HTTP client took from it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// post sends body (chunked when size < 0) to path.
func (b *bundle) post(t *testing.T, path string, headers map[string]string, body io.Reader, size int64) (response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.url+path, body)
	require.NoError(t, err)
	req.ContentLength = size
	if size < 0 {
		req.ContentLength = -1
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := b.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: out}, nil
}

// waitReplied long-polls a record until it is replied.
func (b *bundle) waitReplied(t *testing.T, id string, headers map[string]string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		r := b.do(t, http.MethodGet, "/v1/requests/"+id+"?wait=10", headers, "")
		require.Equal(t, http.StatusOK, r.status, "body: %s", r.body)
		rec := r.json(t)
		if rec["status"] != "pending" && rec["status"] != "queued" {
			require.Equal(t, "replied", rec["status"], "record: %s", r.body)
			return rec
		}
	}
	t.Fatalf("request %s never replied", id)
	return nil
}

// heapPeak samples the heap in use until stop is called, and returns the
// largest growth over the heap in use when it started.
func heapPeak() (stop func() (base, peak uint64)) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	base, peak := m.HeapInuse, m.HeapInuse
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapInuse)
			}
		}
	}()
	return func() (uint64, uint64) {
		close(done)
		wg.Wait()
		return base, peak
	}
}

// largeBodyHeapBound is how much the heap in use of the whole test process
// — the gateway, the HTTP client sending the body and the responder
// streaming it back — may grow while a 200 MiB body goes through by claim
// check. The content is streamed in 256 KiB (upload) and 32 KiB (download)
// pieces; holding it whole would cost 200 MiB.
const largeBodyHeapBound = 64 << 20

// TestClaimCheckCarries200MiBInBoundedMemory is not parallel: it measures
// the process's heap, which other tests would disturb.
func TestClaimCheckCarries200MiBInBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 200 MiB")
	}
	b := setup(t, options{blobs: true, apiCfg: func(c *api.Config) { c.MaxWait = 10 * time.Second }})
	const size = 200 << 20
	wantSize, wantSum := digestOf(t, jsonBody(size))
	require.EqualValues(t, size, wantSize)

	b.responderWith(t, responder.Config{Queue: "huge", Patterns: []string{"huge.#"}},
		func(ctx context.Context, req responder.Request) (any, error) {
			if req.Claim == nil {
				return nil, fmt.Errorf("no claim: %.100s", req.Body)
			}
			rc, err := req.Open(ctx) // 200 MiB is over ResolveClaimsUpTo: streamed
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			h := sha256.New()
			n, err := io.Copy(h, rc)
			if err != nil {
				return nil, err
			}
			return map[string]any{"size": n, "sha256": hex.EncodeToString(h.Sum(nil)), "claim": req.Claim}, nil
		})

	stop := heapPeak()
	started := time.Now()
	r, err := b.post(t, "/huge/upload", with(jsonCT, "Request-Timeout", "600"), jsonBody(size), size)
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	uploaded := time.Since(started)
	rec := b.waitReplied(t, r.header.Get("Message-ID"), nil)
	base, peak := stop()
	t.Logf("200 MiB: upload %v, round trip %v; heap in use %d MiB at start, peak growth %.1f MiB (bound %d MiB)",
		uploaded, time.Since(started), base>>20, float64(peak-base)/(1<<20), largeBodyHeapBound>>20)
	require.Less(t, peak-base, uint64(largeBodyHeapBound), "the body was held in memory")

	reply := rec["reply"].(map[string]any)["body"].(map[string]any)
	require.EqualValues(t, size, reply["size"])
	require.Equal(t, wantSum, reply["sha256"], "the responder got other bytes")
	claimed := rec["request"].(map[string]any)["claim"].(map[string]any)
	require.Equal(t, "/v1/blobs/"+rec["id"].(string), claimed["url"])
	require.EqualValues(t, size, claimed["size"])
	require.Equal(t, wantSum, claimed["sha256"])
	require.Equal(t, "application/json", claimed["content_type"])
}

func TestClaimCheckResolvesIntoBodyAndMarksTheMessage(t *testing.T) {
	t.Parallel()
	b := setup(t, options{blobs: true})
	const size = 3<<20 + 17
	_, wantSum := digestOf(t, jsonBody(size))
	b.responderWith(t, responder.Config{Queue: "mid", Patterns: []string{"mid.#"}},
		func(_ context.Context, req responder.Request) (any, error) {
			sum := sha256.Sum256(req.Body)
			return map[string]any{"size": len(req.Body), "sha256": hex.EncodeToString(sum[:]), "claimed": req.Claim != nil,
				"header": req.Headers["switchboard-claim"]}, nil
		})

	// Chunked: the gateway cannot know the size before reading past the threshold.
	r, err := b.post(t, "/mid/upload", jsonCT, jsonBody(size), -1)
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	rec := b.waitReplied(t, r.header.Get("Message-ID"), nil)
	reply := rec["reply"].(map[string]any)["body"].(map[string]any)
	require.EqualValues(t, size, reply["size"])
	require.Equal(t, wantSum, reply["sha256"])
	require.Equal(t, true, reply["claimed"])
	require.EqualValues(t, 1, reply["header"])

	// A body at the threshold still goes inline, exactly as before.
	small := `{"data":"` + strings.Repeat("x", 1<<20-11) + `"}`
	require.Len(t, small, 1<<20)
	r = b.do(t, http.MethodPost, "/mid/upload", jsonCT, small)
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	rec = b.waitReplied(t, r.header.Get("Message-ID"), nil)
	reply = rec["reply"].(map[string]any)["body"].(map[string]any)
	require.EqualValues(t, 1<<20, reply["size"])
	require.Equal(t, false, reply["claimed"])
	require.Nil(t, reply["header"])
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM blobs`), "only the large body is a blob")
}

func TestClaimCheckRefusesBodiesOverTheMaximumUnread(t *testing.T) {
	t.Parallel()
	const maxBlob = 8 << 20
	b := setup(t, options{blobs: true, apiCfg: func(c *api.Config) { c.MaxBlobBytes = maxBlob }})
	const sent = 256 << 20

	// A Content-Length over the maximum is refused before the body is read.
	body := &countingReader{r: jsonBody(sent)}
	r, err := b.post(t, "/big/upload", jsonCT, body, sent)
	require.NoError(t, err)
	requireProblem(t, r, http.StatusRequestEntityTooLarge, "body-too-large")
	t.Logf("Content-Length %d: the client sent %d bytes", sent, body.n.Load())
	require.Less(t, body.n.Load(), int64(8<<20), "the gateway read the body it refused")

	// A chunked body is cut at the maximum.
	body = &countingReader{r: jsonBody(sent)}
	r, err = b.post(t, "/big/upload", jsonCT, body, -1)
	require.NoError(t, err)
	requireProblem(t, r, http.StatusRequestEntityTooLarge, "body-too-large")
	t.Logf("chunked: the client sent %d bytes", body.n.Load())
	require.Less(t, body.n.Load(), int64(maxBlob+24<<20), "the gateway read past the maximum")

	require.Zero(t, b.count(t, `SELECT count(*) FROM blobs`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM pg_largeobject_metadata`), "a refused body left a large object")
	require.Zero(t, b.count(t, `SELECT count(*) FROM requests`))
}

// claimed submits a body of size by claim check to path and returns the
// record's id and the content's digest.
func (b *bundle) claimed(t *testing.T, path string, headers map[string]string, size int64, want int) (string, string) {
	t.Helper()
	_, sum := digestOf(t, jsonBody(size))
	r, err := b.post(t, path, with(headers, "Content-Type", "application/json"), jsonBody(size), size)
	require.NoError(t, err)
	require.Equal(t, want, r.status, "body: %s", r.body)
	return r.header.Get("Message-ID"), sum
}

func TestBlobServesContentRangesAndDigests(t *testing.T) {
	t.Parallel()
	b := setup(t, options{blobs: true, apiCfg: func(c *api.Config) { c.ClaimCheckBytes = 1024 }})
	ch, q := b.bindQueue(t, "rng", "rng.#")
	const size = 300_000
	id, sum := b.claimed(t, "/rng/get", nil, size, http.StatusAccepted)

	msg := getOne(t, ch, q)
	require.EqualValues(t, 1, msg.Headers["switchboard-claim"])
	var env map[string]map[string]any
	require.NoError(t, json.Unmarshal(msg.Body, &env))
	require.Equal(t, "/v1/blobs/"+id, env["claim"]["url"])
	require.EqualValues(t, size, env["claim"]["size"])
	require.Equal(t, sum, env["claim"]["sha256"])

	content, err := io.ReadAll(jsonBody(size))
	require.NoError(t, err)
	full := b.do(t, http.MethodGet, "/v1/blobs/"+id, nil, "")
	require.Equal(t, http.StatusOK, full.status, "body: %.300s", full.body)
	require.Equal(t, content, full.body)
	require.Equal(t, strconv.Itoa(size), full.header.Get("Content-Length"))
	require.Equal(t, "application/json", full.header.Get("Content-Type"))
	require.Equal(t, `"`+sum+`"`, full.header.Get("ETag"))
	raw, _ := hex.DecodeString(sum)
	require.Equal(t, "sha-256=:"+base64.StdEncoding.EncodeToString(raw)+":", full.header.Get("Repr-Digest"))
	require.Equal(t, "bytes", full.header.Get("Accept-Ranges"))

	part := b.do(t, http.MethodGet, "/v1/blobs/"+id, map[string]string{"Range": "bytes=100000-100999"}, "")
	require.Equal(t, http.StatusPartialContent, part.status)
	require.Equal(t, fmt.Sprintf("bytes 100000-100999/%d", size), part.header.Get("Content-Range"))
	require.Equal(t, content[100000:101000], part.body)

	tail := b.do(t, http.MethodGet, "/v1/blobs/"+id, map[string]string{"Range": "bytes=-10"}, "")
	require.Equal(t, http.StatusPartialContent, tail.status)
	require.Equal(t, content[size-10:], tail.body)

	beyond := b.do(t, http.MethodGet, "/v1/blobs/"+id, map[string]string{"Range": fmt.Sprintf("bytes=%d-", size+5)}, "")
	require.Equal(t, http.StatusRequestedRangeNotSatisfiable, beyond.status)

	same := b.do(t, http.MethodGet, "/v1/blobs/"+id, map[string]string{"If-None-Match": `"` + sum + `"`}, "")
	require.Equal(t, http.StatusNotModified, same.status)

	requireProblem(t, b.do(t, http.MethodGet, "/v1/blobs/"+uuid.NewString(), nil, ""), http.StatusNotFound, "not-found")
	requireProblem(t, b.do(t, http.MethodGet, "/v1/blobs/nope", nil, ""), http.StatusNotFound, "not-found")

	// The record shows the claim, not the content.
	rec := b.do(t, http.MethodGet, "/v1/requests/"+id, nil, "").json(t)
	require.Equal(t, "/v1/blobs/"+id, rec["request"].(map[string]any)["claim"].(map[string]any)["url"])

	// A body up to the threshold travels inline, as before.
	r := b.do(t, http.MethodPost, "/rng/small", jsonCT, `{"small": true}`)
	require.Equal(t, http.StatusAccepted, r.status)
	msg = getOne(t, ch, q)
	require.Nil(t, msg.Headers["switchboard-claim"])
	require.JSONEq(t, `{"small": true}`, string(msg.Body))
}

func TestBlobOfAnotherProjectIsNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t, options{blobs: true, auth: &auth.Limits{}, apiCfg: func(c *api.Config) { c.ClaimCheckBytes = 1024 }})
	alice := b.key(t, "alice", "submit:iso.#", "read:iso.#")
	bob := b.key(t, "bob", "submit:iso.#", "read:iso.#")
	elsewhere := b.key(t, "alice", "read:other.#")
	id, _ := b.claimed(t, "/iso/blob", alice, 4096, http.StatusServiceUnavailable) // nobody is bound: unroutable, kept

	require.Equal(t, http.StatusOK, b.do(t, http.MethodGet, "/v1/blobs/"+id, alice, "").status)
	requireProblem(t, b.do(t, http.MethodGet, "/v1/blobs/"+id, bob, ""), http.StatusNotFound, "not-found")
	requireProblem(t, b.do(t, http.MethodGet, "/v1/blobs/"+id, elsewhere, ""), http.StatusNotFound, "not-found")
	require.Equal(t, http.StatusUnauthorized, b.do(t, http.MethodGet, "/v1/blobs/"+id, nil, "").status)

	// A key that may not submit to the routing key stores nothing.
	reader := b.key(t, "alice", "read:iso.#")
	_, _ = b.claimed(t, "/iso/blob", reader, 4096, http.StatusForbidden)
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM blobs`))
}

func TestBlobsArePurgedWithTheirRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, options{blobs: true, apiCfg: func(c *api.Config) { c.ClaimCheckBytes = 1024 }})
	ctx := context.Background()
	id, _ := b.claimed(t, "/gone/soon", nil, 200_000, http.StatusServiceUnavailable) // unroutable: terminal at once
	kept, _ := b.claimed(t, "/gone/later", nil, 200_000, http.StatusServiceUnavailable)

	// An orphan: stored, but its request was never recorded.
	orphan := uuid.New()
	_, stored, err := b.store.PutBlob(ctx, correlation.NewBlob{ID: orphan, RequestID: orphan, Role: correlation.BlobRequest,
		ContentType: "application/json"}, strings.NewReader(`{"lost": true}`))
	require.NoError(t, err)
	require.True(t, stored)
	require.Equal(t, 3, b.count(t, `SELECT count(*) FROM pg_largeobject_metadata`))

	_, err = b.pool.Exec(ctx, `UPDATE requests SET updated_at = now() - interval '1 hour' WHERE id = $1`, id)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `UPDATE blobs SET created_at = now() - interval '1 hour' WHERE id = $1`, orphan)
	require.NoError(t, err)
	_, err = b.store.Purge(ctx, time.Minute, 100)
	require.NoError(t, err)

	require.Zero(t, b.count(t, `SELECT count(*) FROM requests WHERE id = $1`, id))
	require.Zero(t, b.count(t, `SELECT count(*) FROM blobs WHERE id = ANY($1::uuid[])`, []string{id, orphan.String()}))
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM blobs WHERE id = $1`, kept), "a blob within retention stays")
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM pg_largeobject_metadata`), "the purged blobs' large objects stayed")
	requireProblem(t, b.do(t, http.MethodGet, "/v1/blobs/"+id, nil, ""), http.StatusNotFound, "not-found")
	require.Equal(t, http.StatusOK, b.do(t, http.MethodGet, "/v1/blobs/"+kept, nil, "").status)
}

func TestClaimCheckRepeatsAndDigests(t *testing.T) {
	t.Parallel()
	b := setup(t, options{blobs: true, apiCfg: func(c *api.Config) { c.ClaimCheckBytes = 1024 }})
	b.bindQueue(t, "rep", "rep.#")
	const size = 50_000
	_, sum := digestOf(t, jsonBody(size))
	raw, _ := hex.DecodeString(sum)
	digest := "sha-256=:" + base64.StdEncoding.EncodeToString(raw) + ":"
	id := uuid.NewString()

	first, _ := b.claimed(t, "/rep/x", map[string]string{"Message-ID": id, "Content-Digest": digest}, size, http.StatusAccepted)
	require.Equal(t, id, first)
	// The same Message-ID and content: the same request, one blob.
	again, _ := b.claimed(t, "/rep/x", map[string]string{"Message-ID": id}, size, http.StatusAccepted)
	require.Equal(t, id, again)
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM blobs`))
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM pg_largeobject_metadata`))
	// The same Message-ID and other content: a conflict.
	r, err := b.post(t, "/rep/x", with(jsonCT, "Message-ID", id), jsonBody(size+1), size+1)
	require.NoError(t, err)
	requireProblem(t, r, http.StatusConflict, "message-id-conflict")

	// A large body reusing the Message-ID of an inline request is 409, and
	// its blob does not become that request's.
	inline := uuid.NewString()
	require.Equal(t, http.StatusAccepted, b.do(t, http.MethodPost, "/rep/x", with(jsonCT, "Message-ID", inline), `{"a": 1}`).status)
	r, err = b.post(t, "/rep/x", with(jsonCT, "Message-ID", inline), jsonBody(size), size)
	require.NoError(t, err)
	requireProblem(t, r, http.StatusConflict, "message-id-conflict")
	requireProblem(t, b.do(t, http.MethodGet, "/v1/blobs/"+inline, nil, ""), http.StatusNotFound, "not-found")

	// Content that does not match its Content-Digest is not kept.
	r, err = b.post(t, "/rep/x", with(jsonCT, "Content-Digest", digest), jsonBody(size+1), size+1)
	require.NoError(t, err)
	requireProblem(t, r, http.StatusBadRequest, "digest-mismatch")
	// Nor a large body nested too deeply (JSON syntax is not checked when streamed).
	deep := strings.Repeat("[", 100) + strings.Repeat(" ", 2000) + strings.Repeat("]", 100)
	r = b.do(t, http.MethodPost, "/rep/x", jsonCT, deep)
	requireProblem(t, r, http.StatusBadRequest, "invalid-json")
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM blobs`))
	require.Equal(t, 1, b.count(t, `SELECT count(*) FROM pg_largeobject_metadata`))
}

func TestLargeRepliesGoByClaimCheck(t *testing.T) {
	t.Parallel()
	b := setup(t, options{blobs: true, apiCfg: func(c *api.Config) { c.ClaimCheckBytes = 1024 }})
	b.bindQueue(t, "big-reply", "bigreply.#")
	r := b.do(t, http.MethodPost, "/bigreply/ask", jsonCT, `{"small": "question"}`)
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
	id := r.header.Get("Message-ID")
	const size = 400_000
	_, sum := digestOf(t, jsonBody(size))

	// To no known request: refused unread, nothing kept.
	res, err := b.post(t, "/v1/replies", with(jsonCT, "Correlation-ID", uuid.NewString()), jsonBody(size), size)
	require.NoError(t, err)
	requireProblem(t, res, http.StatusNotFound, "unknown-correlation")
	res, err = b.post(t, "/v1/replies", with(jsonCT, "Correlation-ID", "not-a-uuid"), jsonBody(size), -1)
	require.NoError(t, err)
	requireProblem(t, res, http.StatusNotFound, "unknown-correlation")
	require.Zero(t, b.count(t, `SELECT count(*) FROM blobs`))

	res, err = b.post(t, "/v1/replies", with(jsonCT, "Correlation-ID", id), jsonBody(size), -1)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.status, "body: %s", res.body)
	require.Equal(t, "stored", res.json(t)["outcome"])

	// The record's reply is the claim; the content is at its url.
	rec := b.do(t, http.MethodGet, "/v1/requests/"+id, nil, "").json(t)
	require.Equal(t, "replied", rec["status"])
	claimed := rec["reply"].(map[string]any)["body"].(map[string]any)["claim"].(map[string]any)
	require.EqualValues(t, size, claimed["size"])
	require.Equal(t, sum, claimed["sha256"])
	url := claimed["url"].(string)
	require.True(t, strings.HasPrefix(url, "/v1/blobs/"), url)
	require.NotEqual(t, "/v1/blobs/"+id, url, "the reply's blob is not the request's")
	content := b.do(t, http.MethodGet, url, nil, "")
	require.Equal(t, http.StatusOK, content.status)
	n, got := digestOf(t, strings.NewReader(string(content.body)))
	require.EqualValues(t, size, n)
	require.Equal(t, sum, got)
	reply := b.do(t, http.MethodGet, "/v1/requests/"+id+"/reply", nil, "")
	require.Equal(t, http.StatusOK, reply.status)
	require.Equal(t, url, reply.json(t)["claim"].(map[string]any)["url"], "the reply itself is the claim")

	// The reply's blob goes with its request.
	ctx := context.Background()
	_, err = b.pool.Exec(ctx, `UPDATE requests SET updated_at = now() - interval '1 hour' WHERE id = $1`, id)
	require.NoError(t, err)
	_, err = b.store.Purge(ctx, time.Minute, 100)
	require.NoError(t, err)
	require.Zero(t, b.count(t, `SELECT count(*) FROM blobs`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM pg_largeobject_metadata`))
}

// slowReader hands out its content in pieces, pausing before each.
type slowReader struct {
	r     io.Reader
	pause time.Duration
	piece int
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.pause)
	return s.r.Read(p[:min(len(p), s.piece)])
}

// An upload that takes longer than the write deadline of the call (its
// wait plus WriteTimeout) is still answered: the deadline counts from the
// end of the upload.
func TestSlowUploadIsStillAnswered(t *testing.T) {
	t.Parallel()
	b := setup(t, options{blobs: true, apiCfg: func(c *api.Config) {
		c.ClaimCheckBytes, c.MaxWait, c.WriteTimeout = 1024, 0, 500*time.Millisecond
	}})
	b.bindQueue(t, "slow", "slow.#")
	const size = 8 * 1024
	r, err := b.post(t, "/slow/upload", jsonCT, &slowReader{r: jsonBody(size), pause: 200 * time.Millisecond, piece: 1024}, size)
	require.NoError(t, err, "the answer was not written")
	require.Equal(t, http.StatusAccepted, r.status, "body: %s", r.body)
}

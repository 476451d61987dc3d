package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/switchboard-gw/switchboard/internal/claim"
)

// Claim is a claim check (CONTRACT §8): a body too large to travel inline
// (over 1 MiB by default) is kept by the gateway, and the record's
// request (or reply body) holds {"claim": {...}} instead. OpenBlob reads
// the content.
type Claim = claim.Claim

// ErrClaimMismatch means claimed content did not have the size or the
// SHA-256 its claim announced.
var ErrClaimMismatch = claim.ErrMismatch

// ClaimOf returns the claim a record's request or reply body holds; false
// when the body is the content itself.
func ClaimOf(body json.RawMessage) (Claim, bool) {
	if !strings.Contains(string(body[:min(len(body), 64)]), `"claim"`) {
		return Claim{}, false // not worth parsing
	}
	c, err := claim.Parse(body)
	return c, err == nil
}

// OpenBlob streams the content of a claim from GET /v1/blobs/{id}. Its
// last Read fails with ErrClaimMismatch if the content is not what the
// claim says. The caller closes it.
func (c *Client) OpenBlob(ctx context.Context, cl Claim) (io.ReadCloser, error) {
	ref, err := url.Parse(cl.URL)
	if err != nil || ref.IsAbs() || !strings.HasPrefix(ref.Path, "/v1/blobs/") {
		// The key goes only to this gateway's own blob route.
		return nil, fmt.Errorf("client: claim url %q is not /v1/blobs/{id}", cl.URL)
	}
	req, err := c.newRequest(ctx, http.MethodGet, ref.EscapedPath(), nil, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Del("Accept")
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("open blob: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		defer res.Body.Close()
		return nil, fmt.Errorf("open blob: %w", readError(res))
	}
	if res.ContentLength >= 0 && res.ContentLength != cl.Size {
		res.Body.Close()
		return nil, fmt.Errorf("open blob: %w: %d bytes served, %d claimed", ErrClaimMismatch, res.ContentLength, cl.Size)
	}
	return claim.Verify(res.Body, cl), nil
}

package responder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-gw/switchboard/internal/amqpheader"
	"github.com/switchboard-gw/switchboard/internal/claim"
)

// Claim is a claim check (CONTRACT §8): a request too large to travel in
// its AMQP message carries this instead, and its content is on the gateway
// at URL. The responder resolves claims itself; see Request.Open and
// Config.ResolveClaimsUpTo.
type Claim = claim.Claim

// DefaultResolveClaimsUpTo is the largest claimed body the responder reads
// into Request.Body before calling the Handler.
const DefaultResolveClaimsUpTo = 64 << 20

// ErrClaimMismatch means a claim's content did not have the size or the
// sha-256 its claim announced: it is never handed to a Handler as good.
var ErrClaimMismatch = claim.ErrMismatch

// isClaim reports whether a delivery's body is a claim (header
// switchboard-claim: 1).
func isClaim(h amqp.Table) bool {
	switch v := h[claim.Header].(type) {
	case bool:
		return v
	case string:
		return v == "1" || strings.EqualFold(v, "true")
	default:
		n, ok := amqpheader.Int(v)
		return ok && n != 0
	}
}

// claimFetcher reads claimed content from the gateway.
type claimFetcher struct {
	base   string // the gateway's base URL
	apiKey string
	client *http.Client
}

// permanentError is a claim that can never be resolved (unlike a gateway
// that is briefly away): the request fails instead of being requeued.
type permanentError struct{ err error }

// permanent reports whether err means the claim can never be resolved.
func permanent(err error) bool {
	return errors.As(err, new(permanentError)) || errors.Is(err, ErrClaimMismatch)
}

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// open fetches the content of c; the reader fails with ErrClaimMismatch
// at its end if the content is not what c announced.
func (f *claimFetcher) open(ctx context.Context, c Claim) (io.ReadCloser, error) {
	if f == nil || f.base == "" {
		return nil, permanentError{errors.New("claim: the responder has no GatewayURL to fetch claimed bodies from")}
	}
	u, err := url.JoinPath(f.base, "/") // validate the base
	if err != nil {
		return nil, permanentError{fmt.Errorf("claim: gateway url: %w", err)}
	}
	ref, err := url.Parse(c.URL)
	if err != nil {
		return nil, permanentError{fmt.Errorf("claim: url: %w", err)}
	}
	base, _ := url.Parse(u)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.ResolveReference(ref).String(), nil)
	if err != nil {
		return nil, permanentError{fmt.Errorf("claim: %w", err)}
	}
	if f.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+f.apiKey)
	}
	res, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("claim: fetch %s: %w", c.URL, err)
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		err := fmt.Errorf("claim: fetch %s: %s", c.URL, res.Status)
		if res.StatusCode >= 400 && res.StatusCode < 500 && res.StatusCode != http.StatusTooManyRequests && res.StatusCode != http.StatusRequestTimeout {
			return nil, permanentError{err}
		}
		return nil, err
	}
	if res.ContentLength >= 0 && res.ContentLength != c.Size {
		res.Body.Close()
		return nil, permanentError{fmt.Errorf("%w: %d bytes served, %d claimed", ErrClaimMismatch, res.ContentLength, c.Size)}
	}
	return claim.Verify(res.Body, c), nil
}

// resolve reads claimed content whole, checked.
func (f *claimFetcher) resolve(ctx context.Context, c Claim) ([]byte, error) {
	rc, err := f.open(ctx, c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := bytes.NewBuffer(make([]byte, 0, c.Size))
	if _, err := buf.ReadFrom(rc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Open returns the request's content as a stream: the claimed content,
// fetched from the gateway and checked (its last Read fails with
// ErrClaimMismatch if it is not what the claim says), or else Body. Use it
// for claimed bodies over Config.ResolveClaimsUpTo, which are not read into
// Body; it works for every request. The caller closes the reader.
func (r Request) Open(ctx context.Context) (io.ReadCloser, error) {
	if r.Claim == nil || r.resolved {
		return io.NopCloser(bytes.NewReader(r.Body)), nil
	}
	return r.claims.open(ctx, *r.Claim)
}

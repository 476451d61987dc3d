package api_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/auth"
)

// Each project sees only its own requests: another project's id is 404
// everywhere, and lists show only the caller's.
func TestProjectsAreIsolated(t *testing.T) {
	t.Parallel()
	b := setup(t, options{auth: &auth.Limits{}})
	b.bindQueue(t, "isolated", "iso.#")
	alice := b.key(t, "alice", "submit:iso.#", "read:iso.#")
	bob := b.key(t, "bob", "submit:iso.#", "read:iso.#")

	requireProblem(t, b.do(t, "POST", "/iso/a", jsonCT, `{}`), 401, "unauthorized")
	requireProblem(t, b.do(t, "POST", "/iso/a", with(jsonCT, "Authorization", "Bearer sb_not-a-real-key-of-the-right-length-000000000"), `{}`), 401, "unauthorized")

	res := b.do(t, "POST", "/iso/a", with(jsonCT, flatten(alice)...), `{"owner": "alice"}`)
	require.Equal(t, 202, res.status, "body: %s", res.body)
	id := res.header.Get("Message-ID")
	require.True(t, strings.HasPrefix(res.header.Get("Read-Token"), "sbt_"), "the answer carries a read token")

	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+id, alice, "").status)
	for _, path := range []string{"/v1/requests/" + id, "/v1/requests/" + id + "/reply", "/v1/requests/" + id + "/events",
		"/v1/requests/" + id + "/deliveries"} {
		requireProblem(t, b.do(t, "GET", path, bob, ""), 404, "not-found")
	}
	requireProblem(t, b.do(t, "DELETE", "/v1/requests/"+id, bob, ""), 404, "not-found")
	requireProblem(t, b.do(t, "POST", "/v1/requests/"+id+"/read-token", bob, ""), 404, "not-found")
	// The same Message-ID from another project is a conflict, not a repeat.
	requireProblem(t, b.do(t, "POST", "/iso/a", with(jsonCT, append(flatten(bob), "Message-ID", id)...), `{"owner": "alice"}`), 409, "message-id-conflict")

	list := b.do(t, "GET", "/v1/requests", bob, "")
	require.Equal(t, 200, list.status)
	require.NotContains(t, string(list.body), id)
	list = b.do(t, "GET", "/v1/requests", alice, "")
	require.Contains(t, string(list.body), id)

	// Scopes: a key that may not submit there is 403; a read scope that
	// does not cover the routing key hides the request.
	reader := b.key(t, "alice", "read:other.#")
	requireProblem(t, b.do(t, "POST", "/iso/a", with(jsonCT, flatten(reader)...), `{}`), 403, "forbidden")
	requireProblem(t, b.do(t, "GET", "/v1/requests/"+id, reader, ""), 404, "not-found")
	requireProblem(t, b.do(t, "GET", "/v1/dead-letters", alice, ""), 403, "forbidden")
}

// A read token reads its one request, by query parameter, and nothing else.
func TestReadTokenReadsOneRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, options{auth: &auth.Limits{}})
	b.bindQueue(t, "tokens", "tok.#")
	alice := b.key(t, "alice", "submit:tok.#", "read:tok.#")
	first := b.do(t, "POST", "/tok/a", with(jsonCT, flatten(alice)...), `{}`)
	second := b.do(t, "POST", "/tok/a", with(jsonCT, flatten(alice)...), `{}`)
	token := url.QueryEscape(first.header.Get("Read-Token"))
	id, other := first.header.Get("Message-ID"), second.header.Get("Message-ID")

	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+id+"?access_token="+token, nil, "").status)
	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+id+"/events?access_token="+token, nil, "").status)
	requireProblem(t, b.do(t, "GET", "/v1/requests/"+other+"?access_token="+token, nil, ""), 404, "not-found")
	requireProblem(t, b.do(t, "GET", "/v1/requests?access_token="+token, nil, ""), 403, "forbidden")
	requireProblem(t, b.do(t, "DELETE", "/v1/requests/"+id+"?access_token="+token, nil, ""), 403, "forbidden")
	requireProblem(t, b.do(t, "POST", "/tok/a?access_token="+token, jsonCT, `{}`), 403, "forbidden")
	requireProblem(t, b.do(t, "GET", "/v1/requests/"+id+"?access_token=sbt_forged", nil, ""), 401, "unauthorized")

	minted := b.do(t, "POST", "/v1/requests/"+other+"/read-token", alice, "")
	require.Equal(t, 200, minted.status, "body: %s", minted.body)
	tok := url.QueryEscape(minted.json(t)["token"].(string))
	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+other+"?access_token="+tok, nil, "").status)
}

// Past a project's rate, submits are 429 with Retry-After; past its
// concurrent long-polls, so are long-polls. Other projects are not held up.
func TestProjectLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, options{auth: &auth.Limits{RPS: 1, Burst: 2, MaxWaiters: 1}})
	b.bindQueue(t, "limits", "lim.#")
	alice := b.key(t, "alice", "submit:lim.#", "read:lim.#")
	bob := b.key(t, "bob", "submit:lim.#", "read:lim.#")
	var ids []string
	for range 2 {
		res := b.do(t, "POST", "/lim/a", with(jsonCT, flatten(alice)...), `{}`)
		require.Equal(t, 202, res.status)
		ids = append(ids, res.header.Get("Message-ID"))
	}
	limited := b.do(t, "POST", "/lim/a", with(jsonCT, flatten(alice)...), `{}`)
	requireProblem(t, limited, 429, "rate-limited")
	require.NotEmpty(t, limited.header.Get("Retry-After"))
	require.Equal(t, 202, b.do(t, "POST", "/lim/a", with(jsonCT, flatten(bob)...), `{}`).status, "another project is not held up")

	held := make(chan response, 1)
	go func() { held <- b.do(t, "GET", "/v1/requests/"+ids[0]+"?wait=3", alice, "") }()
	time.Sleep(300 * time.Millisecond)
	requireProblem(t, b.do(t, "GET", "/v1/requests/"+ids[1]+"?wait=3", alice, ""), 429, "rate-limited")
	require.Equal(t, 200, b.do(t, "GET", "/v1/requests/"+ids[1], alice, "").status, "a read without a wait is not a long-poll")
	require.Equal(t, 200, (<-held).status)
}

// Cancels are audited with the project and key id, never the key.
func TestActionsAreAudited(t *testing.T) {
	t.Parallel()
	b := setup(t, options{auth: &auth.Limits{}})
	b.bindQueue(t, "audited", "aud.#")
	admin := b.key(t, "alice", "admin", "submit:aud.#", "read:aud.#")
	res := b.do(t, "POST", "/aud/a", with(jsonCT, flatten(admin)...), `{}`)
	id := res.header.Get("Message-ID")
	require.Equal(t, 200, b.do(t, "DELETE", "/v1/requests/"+id, admin, "").status)
	trail := b.do(t, "GET", "/v1/audit", admin, "")
	require.Equal(t, 200, trail.status, "body: %s", trail.body)
	require.Contains(t, string(trail.body), `"request.cancel"`)
	require.Contains(t, string(trail.body), `"request.submit"`)
	require.NotContains(t, string(trail.body), strings.TrimPrefix(admin["Authorization"], "Bearer "))
}

package auth

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func TestParseScopes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      []string
		want    Scopes
		wantErr string
	}{
		{in: nil, want: Scopes{}},
		{in: []string{"admin"}, want: Scopes{"admin"}},
		{in: []string{"submit:workflow.#", "read:workflow.*.status", "admin", "submit:workflow.#"},
			want: Scopes{"submit:workflow.#", "read:workflow.*.status", "admin"}},
		{in: []string{"read:#"}, want: Scopes{"read:#"}},
		{in: []string{"Admin"}, wantErr: `invalid scope: "Admin": want admin, submit:PATTERN or read:PATTERN`},
		{in: []string{"write:a"}, wantErr: `"write:a": want admin`},
		{in: []string{"submit"}, wantErr: `"submit": want admin`},
		{in: []string{"submit:"}, wantErr: `"submit:": invalid topic pattern: the pattern is empty`},
		{in: []string{"read:a..b"}, wantErr: `word 2 of "a..b" is empty`},
		{in: []string{"read:a.*b"}, wantErr: `mixes a wildcard`},
		{in: []string{"admin:x"}, wantErr: `"admin:x": want admin`},
		{in: []string{""}, wantErr: `"": want admin`},
	} {
		got, err := ParseScopes(tc.in)
		if tc.wantErr != "" {
			require.ErrorIs(t, err, ErrInvalidScope, "%q", tc.in)
			require.ErrorContains(t, err, tc.wantErr)
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		require.Equal(t, tc.want, got)
	}
}

func TestScopesMatch(t *testing.T) {
	t.Parallel()
	s := Scopes{"submit:workflow.*.create", "read:workflow.#", "read:billing"}
	for _, tc := range []struct {
		key          string
		submit, read bool
		adminRead    bool
	}{
		{key: "workflow.vla.create", submit: true, read: true, adminRead: true},
		{key: "workflow.vla.delete", read: true, adminRead: true},
		{key: "workflow", read: true, adminRead: true}, // "workflow.#" matches "workflow"
		{key: "workflow.a.b.create", read: true, adminRead: true},
		{key: "billing", read: true, adminRead: true},
		{key: "billing.x", adminRead: true},
		{key: "other.vla.create", adminRead: true},
		{key: "", adminRead: true},
	} {
		require.Equal(t, tc.submit, s.CanSubmit(tc.key), "submit %q", tc.key)
		require.Equal(t, tc.read, s.CanRead(tc.key), "read %q", tc.key)
		admin := Scopes{"admin"}
		require.Equal(t, tc.adminRead, admin.CanRead(tc.key), "admin read %q", tc.key)
		require.False(t, admin.CanSubmit(tc.key), "admin never implies submit")
	}
	require.False(t, s.IsAdmin())
	require.True(t, Scopes{"read:#", "admin"}.IsAdmin())
	require.Equal(t, []string{"submit:workflow.*.create", "read:workflow.#", "read:billing"}, s.Strings())
	require.Equal(t, []string{}, Scopes(nil).Strings())
	// submit does not imply read.
	require.False(t, Scopes{"submit:#"}.CanRead("a"))
}

func TestPrincipal(t *testing.T) {
	t.Parallel()
	proj, other := uuid.New(), uuid.New()
	req, otherReq := uuid.New(), uuid.New()
	key := Principal{ProjectID: proj, KeyID: uuid.New(), Scopes: Scopes{"submit:a.#", "read:a.#"}}
	projAdmin := Principal{ProjectID: proj, KeyID: uuid.New(), Scopes: Scopes{"admin"}}
	operator := Principal{ProjectID: DefaultProject, KeyID: uuid.New(), Scopes: Scopes{"admin"}}
	defaultReader := Principal{ProjectID: DefaultProject, KeyID: uuid.New(), Scopes: Scopes{"read:#"}}
	token := Principal{ProjectID: proj, Scopes: Scopes{"admin", "submit:#"}, RequestID: req}
	defaultToken := Principal{ProjectID: DefaultProject, Scopes: Scopes{"admin"}, RequestID: req}
	insecure := InsecurePrincipal()

	require.False(t, key.Operator())
	require.False(t, projAdmin.Operator())
	require.True(t, operator.Operator())
	require.False(t, defaultReader.Operator())
	require.False(t, defaultToken.Operator(), "a token never operates")
	require.True(t, insecure.Operator())

	require.True(t, key.CanSubmit("a.b"))
	require.False(t, key.CanSubmit("b"))
	require.False(t, projAdmin.CanSubmit("a.b"))
	require.False(t, token.CanSubmit("a.b"), "a token never submits")
	require.True(t, insecure.CanSubmit("anything.at.all"))

	for _, tc := range []struct {
		name    string
		p       Principal
		project uuid.UUID
		request uuid.UUID
		key     string
		want    bool
	}{
		{"key, own project, in scope", key, proj, req, "a.b", true},
		{"key, own project, out of scope", key, proj, req, "b", false},
		{"key, other project", key, other, req, "a.b", false},
		{"project admin, own project", projAdmin, proj, req, "zzz", true},
		{"project admin, other project", projAdmin, other, req, "zzz", false},
		{"operator, any project", operator, other, req, "zzz", true},
		{"default reader, other project", defaultReader, other, req, "a", false},
		{"token, its request", token, proj, req, "zzz", true},
		{"token, another request", token, proj, otherReq, "zzz", false},
		{"token, its request id in another project", token, other, req, "zzz", false},
		{"default token, other project", defaultToken, other, req, "zzz", false},
		{"insecure", insecure, other, req, "zzz", true},
	} {
		require.Equal(t, tc.want, tc.p.CanRead(tc.project, tc.request, tc.key), tc.name)
	}

	_, ok := FromContext(t.Context())
	require.False(t, ok)
	got, ok := FromContext(WithPrincipal(t.Context(), key))
	require.True(t, ok)
	require.Equal(t, key, got)
}

package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/auth"
	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

func TestKeysCommands(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Database(t)
	getenv := func(k string) string {
		if k == "SWITCHBOARD_DATABASE_URL" {
			return dbURL
		}
		return ""
	}
	sb := func(args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, getenv, &stdout, &stderr)
		return stdout.String(), stderr.String(), err
	}

	out, _, err := sb("projects", "create", "acme")
	require.NoError(t, err)
	require.Regexp(t, `^created project acme \(id [0-9a-f-]{36}\)\n$`, out)
	_, _, err = sb("projects", "create", "acme")
	require.ErrorIs(t, err, auth.ErrExists)
	_, _, err = sb("projects", "create", "Not Valid")
	require.ErrorIs(t, err, auth.ErrInvalid)
	out, _, err = sb("projects", "list")
	require.NoError(t, err)
	require.Regexp(t, `(?s)^ID +NAME +CREATED\n[0-9a-f-]{36} +acme .*\n00000000-0000-0000-0000-000000000000 +default `, out)

	out, errOut, err := sb("keys", "create", "--project", "acme", "--name", "ci", "--scope", "submit:orders.#",
		"--scope", "read:orders.#", "--expires", "720h")
	require.NoError(t, err, errOut)
	require.Empty(t, errOut)
	m := regexp.MustCompile(`(?m)^key: +(sb_[A-Za-z0-9_-]{43})\nid: +([0-9a-f-]{36})\nproject: +acme\nname: +ci\nprefix: +(sb_\S{7})\n` +
		`scopes: +submit:orders.# read:orders.#\nexpires: +\d{4}-\d\d-\d\dT\S+Z\n` +
		`This key will not be shown again: store it now.`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	secret, id, prefix := m[1], m[2], m[3]
	require.Equal(t, secret[:10], prefix)

	pool, err := pgxpool.New(t.Context(), dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store := auth.NewStore(pool, nil)
	t.Cleanup(store.Close)
	p, err := store.Authenticate(t.Context(), secret)
	require.NoError(t, err)
	require.Equal(t, "acme", p.ProjectName)
	require.Equal(t, id, p.KeyID.String())

	// The default project, and an operator key.
	out, _, err = sb("keys", "create", "--name", "ops", "--scope", "admin")
	require.NoError(t, err)
	require.Contains(t, out, "project: default\n")
	require.Contains(t, out, "expires: never\n")

	out, _, err = sb("keys", "list")
	require.NoError(t, err)
	require.Regexp(t, `(?s)^ID +PROJECT +NAME +PREFIX +SCOPES +STATE +CREATED +EXPIRES +LAST USED\n`, out)
	require.Contains(t, out, id)
	require.Contains(t, out, "submit:orders.#,read:orders.#")
	require.NotContains(t, out, secret, "a list never shows a key")
	require.Equal(t, 3, strings.Count(out, "\n"))
	out, _, err = sb("keys", "list", "--project", "acme")
	require.NoError(t, err)
	require.Equal(t, 2, strings.Count(out, "\n"))
	require.Contains(t, out, " active ")

	out, _, err = sb("keys", "revoke", id)
	require.NoError(t, err)
	require.Contains(t, out, "revoked key "+id)
	// Another process revoked it: a gateway that has not cached it refuses it
	// (one that has stops within the cache TTL).
	fresh := auth.NewStore(pool, nil)
	_, err = fresh.Authenticate(t.Context(), secret)
	require.ErrorIs(t, err, auth.ErrUnauthorized)
	out, _, err = sb("keys", "list", "--project", "acme")
	require.NoError(t, err)
	require.Contains(t, out, " revoked ")

	// Mistakes.
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"keys", "create", "--scope", "admin"}, "--name is required"},
		{[]string{"keys", "create", "--name", "x"}, "at least one --scope"},
		{[]string{"keys", "create", "--name", "x", "--scope", "root"}, `invalid scope: "root"`},
		{[]string{"keys", "create", "--name", "x", "--scope", "admin", "--project", "nope"}, `project "nope": project: not found`},
		{[]string{"keys", "list", "--project", "nope"}, `project "nope": project: not found`},
		{[]string{"keys", "revoke", "not-an-id"}, `"not-an-id" is not a key id`},
		{[]string{"keys", "revoke", "00000000-0000-0000-0000-000000000001"}, "key: not found"},
		{[]string{"keys", "frob"}, `unknown keys command "frob"`},
		{[]string{"projects", "frob"}, `unknown projects command "frob"`},
	} {
		_, _, err := sb(tc.args...)
		require.ErrorContains(t, err, tc.err, tc.args)
	}
	_, errOut, err = sb("keys")
	require.ErrorIs(t, err, errUsage)
	require.Contains(t, errOut, "switchboard keys create --project NAME")
	_, _, err = sb("keys", "revoke")
	require.ErrorIs(t, err, errUsage)
}

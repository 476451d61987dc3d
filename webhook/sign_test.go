package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/webhook/signature"
)

// The secret of the Standard Webhooks specification's test vector.
const specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func mustSecret(t *testing.T, s string) signature.Secret {
	t.Helper()
	secret, err := signature.ParseSecret(s)
	require.NoError(t, err)
	return secret
}

// newSecret returns a fresh secret and its whsec_ text.
func newSecret(t *testing.T) (signature.Secret, string) {
	t.Helper()
	text, err := signature.NewSecret()
	require.NoError(t, err)
	return mustSecret(t, text), text
}

// TestSignaturesVerifyWithTheStandardWebhooksLibrary checks the signatures
// with an independent implementation: the official standardwebhooks npm
// package, run by testdata/standardwebhooks/verify.mjs.
func TestSignaturesVerifyWithTheStandardWebhooksLibrary(t *testing.T) {
	t.Parallel()
	node, dir := nodeVerifier(t)
	previous, previousText := newSecret(t)
	current, currentText := newSecret(t)
	spec := mustSecret(t, specSecret)
	body := `{"id":"0190d5a4-54e6-7d3a-9f5e-3c1b2a4d5e6f","status":"replied","reply":{"ok":true,"n":42}}`
	unicode := "{\"text\":\"héllo wörld — 日本語 🚀 \u2028\",\"emoji\":\"👩‍💻\",\"escaped\":\"\\u0000\"}"

	cases := []struct {
		name         string
		signWith     []signature.Secret
		receiver     string // the secret the receiver holds
		signed, sent string
		ok           bool
	}{
		{"one secret", []signature.Secret{current}, currentText, body, body, true},
		{"the specification's secret", []signature.Secret{spec}, specSecret, body, body, true},
		{"rotation, the receiver holds only the new secret", []signature.Secret{previous, current}, currentText, body, body, true},
		{"rotation, the receiver holds only the old secret", []signature.Secret{current, previous}, previousText, body, body, true},
		{"unicode body", []signature.Secret{current}, currentText, unicode, unicode, true},
		{"empty object", []signature.Secret{current}, currentText, `{}`, `{}`, true},
		{"tampered body", []signature.Secret{current}, currentText, body, strings.Replace(body, "42", "43", 1), false},
		{"another secret", []signature.Secret{previous}, currentText, body, body, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			headers := map[string]string{}
			for k, v := range signature.Headers("msg_"+strconv.Itoa(len(c.name)), time.Now(), []byte(c.signed), c.signWith...) {
				headers[strings.ToLower(k)] = v[0]
			}
			input, err := json.Marshal(map[string]any{"secret": c.receiver, "headers": headers, "body": c.sent})
			require.NoError(t, err)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, "verify.mjs")
			cmd.Dir = dir
			cmd.Stdin = bytes.NewReader(input)
			out, err := cmd.CombinedOutput()
			if c.ok {
				require.NoError(t, err, string(out))
				require.Equal(t, "ok\n", string(out))
				return
			}
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, string(out))
			require.Equal(t, 1, exit.ExitCode())
			require.Contains(t, string(out), "No matching signature found")
		})
	}
}

// nodeVerifier returns node's path and the directory of verify.mjs, or
// skips the test (fails it when CI=true) when they are not installed.
func nodeVerifier(t *testing.T) (node, dir string) {
	t.Helper()
	dir = filepath.Join("testdata", "standardwebhooks")
	node, err := exec.LookPath("node")
	if err != nil {
		missingTestDependency(t, "node is not on PATH: install Node.js 18 or later, then run `make testdeps`")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks", "package.json")); err != nil {
		missingTestDependency(t, "the standardwebhooks npm package is not installed: run `make testdeps` "+
			"(npm ci in webhook/testdata/standardwebhooks)")
	}
	return node, dir
}

// missingTestDependency skips the test, or fails it on CI, where a skipped
// interoperability check would pass unnoticed.
func missingTestDependency(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why + " (with CI=true this test fails instead)")
}

package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/webhook"
)

// The test vector of the Standard Webhooks specification, as used by every
// one of its reference libraries (libraries/*/ in
// github.com/standard-webhooks/standard-webhooks).
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specKey       = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecret(t *testing.T, s string) webhook.Secret {
	t.Helper()
	secret, err := webhook.ParseSecret(s)
	require.NoError(t, err)
	return secret
}

// newSecret returns a fresh secret and its whsec_ text.
func newSecret(t *testing.T) (webhook.Secret, string) {
	t.Helper()
	text, err := webhook.NewSecret()
	require.NoError(t, err)
	return mustSecret(t, text), text
}

func TestSignMatchesTheSpecificationTestVector(t *testing.T) {
	t.Parallel()
	for _, text := range []string{specSecret, specKey} {
		secret := mustSecret(t, text)
		ts := time.Unix(specTimestamp, 0)
		require.Equal(t, specSignature, webhook.Sign(specID, ts, []byte(specBody), secret))

		h := webhook.Headers(specID, ts, []byte(specBody), secret)
		require.Equal(t, specID, h.Get("webhook-id"))
		require.Equal(t, "1614265330", h.Get("webhook-timestamp"))
		require.Equal(t, specSignature, h.Get("webhook-signature"))
		require.NoError(t, webhook.Verify(h, []byte(specBody), ts, 0, secret))
	}
}

func TestSignTakesWholeSeconds(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t, specSecret)
	ts := time.Unix(specTimestamp, 999_999_999)
	require.Equal(t, specSignature, webhook.Sign(specID, ts, []byte(specBody), secret))
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	key := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }
	for _, good := range []string{specSecret, specKey, " " + specSecret + "\n", "whsec_" + key(24), "whsec_" + key(64)} {
		_, err := webhook.ParseSecret(good)
		require.NoError(t, err, good)
	}
	cases := []struct{ secret, err string }{
		{"", "must be 24 to 64 bytes"},
		{"whsec_", "must be 24 to 64 bytes"},
		{"whsec_" + key(23), "is 23 bytes; it must be 24 to 64 bytes"},
		{"whsec_" + key(65), "is 65 bytes; it must be 24 to 64 bytes"},
		{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", "not whsec_ followed by standard base64"},
		{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwx", "not whsec_ followed by standard base64"},
		{"whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not whsec_ followed by standard base64"},
	}
	for _, c := range cases {
		_, err := webhook.ParseSecret(c.secret)
		require.Error(t, err, c.secret)
		require.Contains(t, err.Error(), c.err, c.secret)
		if len(c.secret) > len("whsec_") {
			require.NotContains(t, err.Error(), strings.TrimPrefix(c.secret, "whsec_")[:8], "an error never quotes the secret")
		}
	}
}

func TestParseSecrets(t *testing.T) {
	t.Parallel()
	_, other := newSecret(t)
	secrets, err := webhook.ParseSecrets(specSecret + ", " + other + "\t" + specKey)
	require.NoError(t, err)
	require.Len(t, secrets, 3)

	secrets, err = webhook.ParseSecrets("  ")
	require.NoError(t, err)
	require.Empty(t, secrets)

	_, err = webhook.ParseSecrets(specSecret + " whsec_short")
	require.ErrorContains(t, err, "secret 2 of 2")
}

func TestNewSecret(t *testing.T) {
	t.Parallel()
	a, err := webhook.NewSecret()
	require.NoError(t, err)
	b, err := webhook.NewSecret()
	require.NoError(t, err)
	require.NotEqual(t, a, b)
	require.True(t, strings.HasPrefix(a, "whsec_"))
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "whsec_"))
	require.NoError(t, err)
	require.Len(t, key, 32)
	mustSecret(t, a)
}

func TestTwoSecretsGiveTwoSignaturesAndEitherVerifies(t *testing.T) {
	t.Parallel()
	previous, _ := newSecret(t)
	current, _ := newSecret(t)
	stranger, _ := newSecret(t)
	now := time.Now()
	body := []byte(`{"status":"replied"}`)
	h := webhook.Headers("msg_1", now, body, current, previous)

	sigs := strings.Split(h.Get("webhook-signature"), " ")
	require.Len(t, sigs, 2)
	require.Equal(t, webhook.Sign("msg_1", now, body, current), sigs[0])
	require.Equal(t, webhook.Sign("msg_1", now, body, previous), sigs[1])

	require.NoError(t, webhook.Verify(h, body, now, 0, previous))
	require.NoError(t, webhook.Verify(h, body, now, 0, current))
	require.NoError(t, webhook.Verify(h, body, now, 0, stranger, previous))
	require.ErrorIs(t, webhook.Verify(h, body, now, 0, stranger), webhook.ErrSignature)
}

func TestVerify(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t, specSecret)
	signedAt := time.Unix(1_700_000_000, 0)
	body := []byte(`{"id":"1","status":"replied"}`)
	signed := func() http.Header { return webhook.Headers("msg_abc", signedAt, body, secret) }

	cases := []struct {
		name      string
		header    func() http.Header
		body      []byte
		now       time.Time
		tolerance time.Duration
		secrets   []webhook.Secret
		err       error // nil when it verifies
	}{
		{name: "valid", header: signed},
		{name: "at the edge of the default tolerance", header: signed, now: signedAt.Add(5 * time.Minute)},
		{name: "at the other edge", header: signed, now: signedAt.Add(-5 * time.Minute)},
		{name: "old", header: signed, now: signedAt.Add(5*time.Minute + time.Second), err: webhook.ErrTimestamp},
		{name: "from the future", header: signed, now: signedAt.Add(-6 * time.Minute), err: webhook.ErrTimestamp},
		{name: "old for a tighter tolerance", header: signed, now: signedAt.Add(31 * time.Second), tolerance: 30 * time.Second, err: webhook.ErrTimestamp},
		{name: "within a wider tolerance", header: signed, now: signedAt.Add(time.Hour), tolerance: 2 * time.Hour},
		{name: "tampered body", header: signed, body: []byte(`{"id":"1","status":"failed"}`), err: webhook.ErrSignature},
		{name: "tampered id", header: with(signed, "webhook-id", "msg_abd"), err: webhook.ErrSignature},
		{name: "tampered timestamp", header: with(signed, "webhook-timestamp", strconv.Itoa(1_700_000_001)), err: webhook.ErrSignature},
		{name: "malformed timestamp", header: with(signed, "webhook-timestamp", "1700000000.5"), err: webhook.ErrTimestamp},
		{name: "negative timestamp", header: with(signed, "webhook-timestamp", "-1"), err: webhook.ErrTimestamp},
		{name: "huge timestamp", header: with(signed, "webhook-timestamp", "9223372036854775807"), err: webhook.ErrTimestamp},
		{name: "missing id", header: with(signed, "webhook-id", ""), err: webhook.ErrMissingHeaders},
		{name: "missing timestamp", header: with(signed, "webhook-timestamp", ""), err: webhook.ErrMissingHeaders},
		{name: "missing signature", header: with(signed, "webhook-signature", ""), err: webhook.ErrMissingHeaders},
		{name: "no headers", header: func() http.Header { return http.Header{} }, err: webhook.ErrMissingHeaders},
		{name: "among other signatures", header: func() http.Header {
			h := signed()
			h.Set("webhook-signature", "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,AAAA  "+h.Get("webhook-signature")+" junk")
			return h
		}},
		{name: "only another version", header: func() http.Header {
			h := signed()
			h.Set("webhook-signature", "v2,"+strings.TrimPrefix(h.Get("webhook-signature"), "v1,"))
			return h
		}, err: webhook.ErrSignature},
		{name: "lower-case header names", header: func() http.Header {
			h := http.Header{}
			for k, v := range signed() {
				h[strings.ToLower(k)] = v
			}
			return h
		}}, // built by hand rather than received by net/http
		{name: "no secrets", header: signed, secrets: []webhook.Secret{}, err: webhook.ErrSignature},
		{name: "the zero secret never verifies", header: func() http.Header {
			h := signed()
			h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(emptyKeyMAC("msg_abc", 1_700_000_000, body)))
			return h
		}, secrets: []webhook.Secret{{}}, err: webhook.ErrSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b, now, secrets := body, signedAt, []webhook.Secret{secret}
			if c.body != nil {
				b = c.body
			}
			if !c.now.IsZero() {
				now = c.now
			}
			if c.secrets != nil {
				secrets = c.secrets
			}
			err := webhook.Verify(c.header(), b, now, c.tolerance, secrets...)
			if c.err == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, c.err)
			for _, other := range []error{webhook.ErrMissingHeaders, webhook.ErrTimestamp, webhook.ErrSignature} {
				if other != c.err {
					require.NotErrorIs(t, err, other)
				}
			}
		})
	}
}

// with returns a header func giving h() with one header replaced.
func with(h func() http.Header, name, value string) func() http.Header {
	return func() http.Header {
		out := h()
		out.Set(name, value)
		return out
	}
}

// emptyKeyMAC is the signature anybody can compute: one under an empty key.
func emptyKeyMAC(id string, ts int64, body []byte) []byte {
	m := hmac.New(sha256.New, nil)
	fmt.Fprintf(m, "%s.%d.%s", id, ts, body)
	return m.Sum(nil)
}

func TestSignSkipsTheZeroSecret(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t, specSecret)
	ts := time.Unix(specTimestamp, 0)
	require.Empty(t, webhook.Sign(specID, ts, []byte(specBody), webhook.Secret{}))
	require.Equal(t, specSignature, webhook.Sign(specID, ts, []byte(specBody), webhook.Secret{}, secret))
}

func TestVerifyRequest(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t, specSecret)
	request := func(signed, sent []byte) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(sent))
		for k, v := range webhook.Headers("msg_1", time.Now(), signed, secret) {
			r.Header[k] = v
		}
		return r
	}
	body := []byte(`{"status":"replied"}`)

	got, err := webhook.VerifyRequest(request(body, body), secret)
	require.NoError(t, err)
	require.Equal(t, body, got)

	got, err = webhook.VerifyRequest(request(body, []byte(`{"status":"failed"}`)), secret)
	require.ErrorIs(t, err, webhook.ErrSignature)
	require.Nil(t, got)

	big := bytes.Repeat([]byte("a"), webhook.MaxBodySize+1)
	_, err = webhook.VerifyRequest(request(big, big), secret)
	var tooLarge *http.MaxBytesError
	require.ErrorAs(t, err, &tooLarge)

	exact := bytes.Repeat([]byte("a"), webhook.MaxBodySize)
	got, err = webhook.VerifyRequest(request(exact, exact), secret)
	require.NoError(t, err)
	require.Len(t, got, webhook.MaxBodySize)
}

func TestSecretNeverShowsItsKey(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t, specSecret)
	key, err := base64.StdEncoding.DecodeString(specKey)
	require.NoError(t, err)
	// Every spelling of the key that could leak.
	leaks := []string{specKey, fmt.Sprint(key), fmt.Sprintf("%x", key), fmt.Sprintf("%X", key), fmt.Sprintf("%q", key), string(key)}

	type exported struct{ Secret webhook.Secret }
	type unexported struct{ secret webhook.Secret }
	var outputs []string
	for _, v := range []any{secret, &secret, exported{secret}, &exported{secret}, unexported{secret}, []webhook.Secret{secret}, map[string]webhook.Secret{"k": secret}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			outputs = append(outputs, fmt.Sprintf(verb, v))
		}
	}
	outputs = append(outputs, secret.String(), secret.GoString(), fmt.Sprint(secret), fmt.Sprintln(secret))

	for _, v := range []any{secret, exported{secret}, map[string]webhook.Secret{"k": secret}} {
		j, err := json.Marshal(v)
		require.NoError(t, err)
		outputs = append(outputs, string(j))
	}
	text, err := secret.MarshalText()
	require.NoError(t, err)
	outputs = append(outputs, string(text))

	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "secret", secret, "config", exported{secret})
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", slog.Any("secret", secret), "secrets", []webhook.Secret{secret})
	outputs = append(outputs, logs.String())

	for _, out := range outputs {
		for _, leak := range leaks {
			require.NotContains(t, out, leak)
		}
	}
	require.Equal(t, "whsec_<redacted>", fmt.Sprintf("%v", secret))
	require.Equal(t, "whsec_<redacted>", fmt.Sprintf("%#v", secret))
	require.Equal(t, "whsec_<redacted>", string(text))
	require.Contains(t, logs.String(), `"secret":"whsec_<redacted>"`)
	j, err := json.Marshal(secret)
	require.NoError(t, err)
	var decoded string
	require.NoError(t, json.Unmarshal(j, &decoded))
	require.Equal(t, "whsec_<redacted>", decoded)
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
		signWith     []webhook.Secret
		receiver     string // the secret the receiver holds
		signed, sent string
		ok           bool
	}{
		{"one secret", []webhook.Secret{current}, currentText, body, body, true},
		{"the specification's secret", []webhook.Secret{spec}, specSecret, body, body, true},
		{"rotation, the receiver holds only the new secret", []webhook.Secret{previous, current}, currentText, body, body, true},
		{"rotation, the receiver holds only the old secret", []webhook.Secret{current, previous}, previousText, body, body, true},
		{"unicode body", []webhook.Secret{current}, currentText, unicode, unicode, true},
		{"empty object", []webhook.Secret{current}, currentText, `{}`, `{}`, true},
		{"tampered body", []webhook.Secret{current}, currentText, body, strings.Replace(body, "42", "43", 1), false},
		{"another secret", []webhook.Secret{previous}, currentText, body, body, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			headers := map[string]string{}
			for k, v := range webhook.Headers("msg_"+strconv.Itoa(len(c.name)), time.Now(), []byte(c.signed), c.signWith...) {
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

func ExampleVerifyRequest() {
	// The receiver's copy of the secret switchboard signs with.
	secret, err := webhook.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err)
	}

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := webhook.VerifyRequest(r, secret)
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		case err != nil:
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		// The body is authentic. webhook-id stays the same on every retry:
		// use it to drop redeliveries.
		fmt.Printf("webhook %s: %s\n", r.Header.Get("webhook-id"), body)
		w.WriteHeader(http.StatusNoContent)
	})

	// What switchboard sends.
	body := []byte(`{"status":"replied"}`)
	deliver := func(sent []byte) int {
		req := httptest.NewRequest(http.MethodPost, "/hooks/switchboard", bytes.NewReader(sent))
		for k, v := range webhook.Headers("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", time.Now(), body, secret) {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		receiver.ServeHTTP(rec, req)
		return rec.Code
	}
	fmt.Println(deliver(body))
	fmt.Println(deliver([]byte(`{"status":"forged"}`)))
	// Output:
	// webhook msg_2KWPBgLlAfxdpx2AI54pPJ85f4W: {"status":"replied"}
	// 204
	// 401
}

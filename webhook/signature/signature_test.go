package signature_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/webhook/signature"
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

func TestSignMatchesTheSpecificationTestVector(t *testing.T) {
	t.Parallel()
	for _, text := range []string{specSecret, specKey} {
		secret := mustSecret(t, text)
		ts := time.Unix(specTimestamp, 0)
		require.Equal(t, specSignature, signature.Sign(specID, ts, []byte(specBody), secret))

		h := signature.Headers(specID, ts, []byte(specBody), secret)
		require.Equal(t, specID, h.Get("webhook-id"))
		require.Equal(t, "1614265330", h.Get("webhook-timestamp"))
		require.Equal(t, specSignature, h.Get("webhook-signature"))
		require.NoError(t, signature.Verify(h, []byte(specBody), ts, 0, secret))
	}
}

func TestSignTakesWholeSeconds(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t, specSecret)
	ts := time.Unix(specTimestamp, 999_999_999)
	require.Equal(t, specSignature, signature.Sign(specID, ts, []byte(specBody), secret))
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	key := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }
	for _, good := range []string{specSecret, specKey, " " + specSecret + "\n", "whsec_" + key(24), "whsec_" + key(64)} {
		_, err := signature.ParseSecret(good)
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
		_, err := signature.ParseSecret(c.secret)
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
	secrets, err := signature.ParseSecrets(specSecret + ", " + other + "\t" + specKey)
	require.NoError(t, err)
	require.Len(t, secrets, 3)

	secrets, err = signature.ParseSecrets("  ")
	require.NoError(t, err)
	require.Empty(t, secrets)

	_, err = signature.ParseSecrets(specSecret + " whsec_short")
	require.ErrorContains(t, err, "secret 2 of 2")
}

func TestNewSecret(t *testing.T) {
	t.Parallel()
	a, err := signature.NewSecret()
	require.NoError(t, err)
	b, err := signature.NewSecret()
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
	h := signature.Headers("msg_1", now, body, current, previous)

	sigs := strings.Split(h.Get("webhook-signature"), " ")
	require.Len(t, sigs, 2)
	require.Equal(t, signature.Sign("msg_1", now, body, current), sigs[0])
	require.Equal(t, signature.Sign("msg_1", now, body, previous), sigs[1])

	require.NoError(t, signature.Verify(h, body, now, 0, previous))
	require.NoError(t, signature.Verify(h, body, now, 0, current))
	require.NoError(t, signature.Verify(h, body, now, 0, stranger, previous))
	require.ErrorIs(t, signature.Verify(h, body, now, 0, stranger), signature.ErrSignature)
}

func TestVerify(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t, specSecret)
	signedAt := time.Unix(1_700_000_000, 0)
	body := []byte(`{"id":"1","status":"replied"}`)
	signed := func() http.Header { return signature.Headers("msg_abc", signedAt, body, secret) }

	cases := []struct {
		name      string
		header    func() http.Header
		body      []byte
		now       time.Time
		tolerance time.Duration
		secrets   []signature.Secret
		err       error // nil when it verifies
	}{
		{name: "valid", header: signed},
		{name: "at the edge of the default tolerance", header: signed, now: signedAt.Add(5 * time.Minute)},
		{name: "at the other edge", header: signed, now: signedAt.Add(-5 * time.Minute)},
		{name: "old", header: signed, now: signedAt.Add(5*time.Minute + time.Second), err: signature.ErrTimestamp},
		{name: "from the future", header: signed, now: signedAt.Add(-6 * time.Minute), err: signature.ErrTimestamp},
		{name: "old for a tighter tolerance", header: signed, now: signedAt.Add(31 * time.Second), tolerance: 30 * time.Second, err: signature.ErrTimestamp},
		{name: "within a wider tolerance", header: signed, now: signedAt.Add(time.Hour), tolerance: 2 * time.Hour},
		{name: "tampered body", header: signed, body: []byte(`{"id":"1","status":"failed"}`), err: signature.ErrSignature},
		{name: "tampered id", header: with(signed, "webhook-id", "msg_abd"), err: signature.ErrSignature},
		{name: "tampered timestamp", header: with(signed, "webhook-timestamp", strconv.Itoa(1_700_000_001)), err: signature.ErrSignature},
		{name: "malformed timestamp", header: with(signed, "webhook-timestamp", "1700000000.5"), err: signature.ErrTimestamp},
		{name: "negative timestamp", header: with(signed, "webhook-timestamp", "-1"), err: signature.ErrTimestamp},
		{name: "huge timestamp", header: with(signed, "webhook-timestamp", "9223372036854775807"), err: signature.ErrTimestamp},
		{name: "missing id", header: with(signed, "webhook-id", ""), err: signature.ErrMissingHeaders},
		{name: "missing timestamp", header: with(signed, "webhook-timestamp", ""), err: signature.ErrMissingHeaders},
		{name: "missing signature", header: with(signed, "webhook-signature", ""), err: signature.ErrMissingHeaders},
		{name: "no headers", header: func() http.Header { return http.Header{} }, err: signature.ErrMissingHeaders},
		{name: "among other signatures", header: func() http.Header {
			h := signed()
			h.Set("webhook-signature", "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,AAAA  "+h.Get("webhook-signature")+" junk")
			return h
		}},
		{name: "only another version", header: func() http.Header {
			h := signed()
			h.Set("webhook-signature", "v2,"+strings.TrimPrefix(h.Get("webhook-signature"), "v1,"))
			return h
		}, err: signature.ErrSignature},
		{name: "lower-case header names", header: func() http.Header {
			h := http.Header{}
			for k, v := range signed() {
				h[strings.ToLower(k)] = v
			}
			return h
		}}, // built by hand rather than received by net/http
		{name: "no secrets", header: signed, secrets: []signature.Secret{}, err: signature.ErrSignature},
		{name: "the zero secret never verifies", header: func() http.Header {
			h := signed()
			h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(emptyKeyMAC("msg_abc", 1_700_000_000, body)))
			return h
		}, secrets: []signature.Secret{{}}, err: signature.ErrSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b, now, secrets := body, signedAt, []signature.Secret{secret}
			if c.body != nil {
				b = c.body
			}
			if !c.now.IsZero() {
				now = c.now
			}
			if c.secrets != nil {
				secrets = c.secrets
			}
			err := signature.Verify(c.header(), b, now, c.tolerance, secrets...)
			if c.err == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, c.err)
			for _, other := range []error{signature.ErrMissingHeaders, signature.ErrTimestamp, signature.ErrSignature} {
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
	require.Empty(t, signature.Sign(specID, ts, []byte(specBody), signature.Secret{}))
	require.Equal(t, specSignature, signature.Sign(specID, ts, []byte(specBody), signature.Secret{}, secret))
}

func TestVerifyRequest(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t, specSecret)
	request := func(signed, sent []byte) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(sent))
		for k, v := range signature.Headers("msg_1", time.Now(), signed, secret) {
			r.Header[k] = v
		}
		return r
	}
	body := []byte(`{"status":"replied"}`)

	got, err := signature.VerifyRequest(request(body, body), secret)
	require.NoError(t, err)
	require.Equal(t, body, got)

	got, err = signature.VerifyRequest(request(body, []byte(`{"status":"failed"}`)), secret)
	require.ErrorIs(t, err, signature.ErrSignature)
	require.Nil(t, got)

	big := bytes.Repeat([]byte("a"), signature.MaxBodySize+1)
	_, err = signature.VerifyRequest(request(big, big), secret)
	var tooLarge *http.MaxBytesError
	require.ErrorAs(t, err, &tooLarge)

	exact := bytes.Repeat([]byte("a"), signature.MaxBodySize)
	got, err = signature.VerifyRequest(request(exact, exact), secret)
	require.NoError(t, err)
	require.Len(t, got, signature.MaxBodySize)
}

func TestSecretNeverShowsItsKey(t *testing.T) {
	t.Parallel()
	secret := mustSecret(t, specSecret)
	key, err := base64.StdEncoding.DecodeString(specKey)
	require.NoError(t, err)
	// Every spelling of the key that could leak.
	leaks := []string{specKey, fmt.Sprint(key), fmt.Sprintf("%x", key), fmt.Sprintf("%X", key), fmt.Sprintf("%q", key), string(key)}

	type exported struct{ Secret signature.Secret }
	type unexported struct{ secret signature.Secret }
	var outputs []string
	for _, v := range []any{secret, &secret, exported{secret}, &exported{secret}, unexported{secret}, []signature.Secret{secret}, map[string]signature.Secret{"k": secret}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			outputs = append(outputs, fmt.Sprintf(verb, v))
		}
	}
	outputs = append(outputs, secret.String(), secret.GoString(), fmt.Sprint(secret), fmt.Sprintln(secret))

	for _, v := range []any{secret, exported{secret}, map[string]signature.Secret{"k": secret}} {
		j, err := json.Marshal(v)
		require.NoError(t, err)
		outputs = append(outputs, string(j))
	}
	text, err := secret.MarshalText()
	require.NoError(t, err)
	outputs = append(outputs, string(text))

	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "secret", secret, "config", exported{secret})
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", slog.Any("secret", secret), "secrets", []signature.Secret{secret})
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

func ExampleVerifyRequest() {
	// The receiver's copy of the secret switchboard signs with.
	secret, err := signature.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err)
	}

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := signature.VerifyRequest(r, secret)
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
		for k, v := range signature.Headers("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", time.Now(), body, secret) {
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

package api

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCORS(t *testing.T) {
	t.Parallel()
	const app, other = "https://app.example.com", "https://evil.example.net"
	exposed := "Message-ID, Time, Location, Correlation-ID, Request-Status, Preference-Applied, Retry-After"
	cases := []struct {
		name    string
		allowed []string
		method  string
		headers map[string]string
		status  int               // 200 means the request reached the handler
		want    map[string]string // response headers; "" means absent
		vary    []string
	}{
		{
			name: "off: no headers at all", allowed: nil, method: http.MethodPost,
			headers: map[string]string{"Origin": app}, status: http.StatusOK,
			want: map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Expose-Headers": ""},
		},
		{
			name: "off: a preflight reaches the router", allowed: []string{}, method: http.MethodOptions,
			headers: map[string]string{"Origin": app, "Access-Control-Request-Method": "POST"}, status: http.StatusOK,
			want: map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": ""},
		},
		{
			name: "allowed origin", allowed: []string{other, app}, method: http.MethodPost,
			headers: map[string]string{"Origin": app}, status: http.StatusOK,
			want: map[string]string{"Access-Control-Allow-Origin": app, "Access-Control-Expose-Headers": exposed,
				"Access-Control-Allow-Credentials": "", "Access-Control-Allow-Methods": ""},
			vary: []string{"Origin"},
		},
		{
			name: "origins match exactly", allowed: []string{app}, method: http.MethodGet,
			headers: map[string]string{"Origin": "https://app.example.com:8443"}, status: http.StatusOK,
			want: map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Expose-Headers": ""},
			vary: []string{"Origin"},
		},
		{
			name: "disallowed origin: served, without CORS headers", allowed: []string{app}, method: http.MethodGet,
			headers: map[string]string{"Origin": other}, status: http.StatusOK,
			want: map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Expose-Headers": ""},
			vary: []string{"Origin"},
		},
		{
			name: "no Origin: not a CORS request", allowed: []string{app}, method: http.MethodGet,
			status: http.StatusOK, want: map[string]string{"Access-Control-Allow-Origin": ""},
			vary: []string{"Origin"},
		},
		{
			name: "wildcard alone answers *", allowed: []string{"*"}, method: http.MethodGet,
			headers: map[string]string{"Origin": other}, status: http.StatusOK,
			want: map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": exposed},
		},
		{
			name: "wildcard with others names the origin", allowed: []string{app, "*"}, method: http.MethodGet,
			headers: map[string]string{"Origin": other}, status: http.StatusOK,
			want: map[string]string{"Access-Control-Allow-Origin": other},
			vary: []string{"Origin"},
		},
		{
			name: "preflight", allowed: []string{app}, method: http.MethodOptions,
			headers: map[string]string{"Origin": app, "Access-Control-Request-Method": "POST",
				"Access-Control-Request-Headers": "content-type,prefer,request-timeout"},
			status: http.StatusNoContent,
			want: map[string]string{"Access-Control-Allow-Origin": app, "Access-Control-Allow-Methods": "GET, POST, DELETE",
				"Access-Control-Allow-Headers": "content-type, prefer, request-timeout", "Access-Control-Max-Age": "600",
				"Access-Control-Allow-Credentials": ""},
			vary: []string{"Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"},
		},
		{
			name: "preflight headers compare without case", allowed: []string{app}, method: http.MethodOptions,
			headers: map[string]string{"Origin": app, "Access-Control-Request-Method": "GET",
				"Access-Control-Request-Headers": "Last-Event-ID, Authorization , Correl-ID,Reply-Status, Message-ID, Time, Reply-To, Correlation-ID"},
			status: http.StatusNoContent,
			want:   map[string]string{"Access-Control-Allow-Headers": "last-event-id, authorization, correl-id, reply-status, message-id, time, reply-to, correlation-id"},
		},
		{
			name: "preflight of a traced browser call", allowed: []string{app}, method: http.MethodOptions,
			headers: map[string]string{"Origin": app, "Access-Control-Request-Method": "POST",
				"Access-Control-Request-Headers": "content-type,traceparent,tracestate"},
			status: http.StatusNoContent,
			want:   map[string]string{"Access-Control-Allow-Headers": "content-type, traceparent, tracestate"},
		},
		{
			name: "preflight of a gather and its replies", allowed: []string{app}, method: http.MethodOptions,
			headers: map[string]string{"Origin": app, "Access-Control-Request-Method": "POST",
				"Access-Control-Request-Headers": "content-type, Expect-Replies, Reply-From"},
			status: http.StatusNoContent,
			want:   map[string]string{"Access-Control-Allow-Headers": "content-type, expect-replies, reply-from"},
		},
		{
			name: "preflight without requested headers", allowed: []string{"*"}, method: http.MethodOptions,
			headers: map[string]string{"Origin": app, "Access-Control-Request-Method": "DELETE"},
			status:  http.StatusNoContent,
			want: map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, DELETE",
				"Access-Control-Allow-Headers": "", "Access-Control-Max-Age": "600"},
			vary: []string{"Access-Control-Request-Method", "Access-Control-Request-Headers"},
		},
		{
			name: "preflight asking for a header not allowed names none", allowed: []string{app}, method: http.MethodOptions,
			headers: map[string]string{"Origin": app, "Access-Control-Request-Method": "POST",
				"Access-Control-Request-Headers": "content-type,x-secret"},
			status: http.StatusNoContent,
			want:   map[string]string{"Access-Control-Allow-Origin": app, "Access-Control-Allow-Headers": ""},
		},
		{
			name: "preflight from a disallowed origin", allowed: []string{app}, method: http.MethodOptions,
			headers: map[string]string{"Origin": other, "Access-Control-Request-Method": "POST"},
			status:  http.StatusForbidden,
			want: map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": "",
				"Access-Control-Max-Age": ""},
			vary: []string{"Origin"},
		},
		{
			name: "OPTIONS that is not a preflight passes through", allowed: []string{app}, method: http.MethodOptions,
			headers: map[string]string{"Origin": app}, status: http.StatusOK,
			want: map[string]string{"Access-Control-Allow-Origin": app, "Access-Control-Allow-Methods": ""},
		},
		{
			name: "OPTIONS from a disallowed origin that is not a preflight passes through", allowed: []string{app},
			method: http.MethodOptions, headers: map[string]string{"Origin": other}, status: http.StatusOK,
			want: map[string]string{"Access-Control-Allow-Origin": ""},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			reached := false
			h := CORS(c.allowed)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				reached = true
				w.Header().Add("Vary", "Accept-Encoding") // the handler's own Vary survives
				w.WriteHeader(http.StatusOK)
			}))
			req := httptest.NewRequest(c.method, "/v1/requests/x", nil)
			for k, v := range c.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			require.Equal(t, c.status, rec.Code)
			require.Equal(t, c.status == http.StatusOK, reached)
			for k, v := range c.want {
				require.Equal(t, v, rec.Header().Get(k), k)
			}
			vary := rec.Header().Values("Vary")
			for _, v := range c.vary {
				require.Contains(t, vary, v)
			}
			if reached {
				require.Contains(t, vary, "Accept-Encoding")
			}
			if len(c.allowed) == 0 || (len(c.allowed) == 1 && c.allowed[0] == "*" && c.method != http.MethodOptions) {
				require.NotContains(t, vary, "Origin", "the answer does not depend on Origin")
			}
		})
	}
}

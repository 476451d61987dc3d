package api

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/correlation"
)

func TestRoutingKey(t *testing.T) {
	t.Parallel()
	long := "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" // 64
	cases := []struct {
		path, key string
		ok        bool
	}{
		{"/workflow/create", "workflow.create", true},
		{"/orion/workflow/create", "orion.workflow.create", true},
		{"/a", "a", true},
		{"/A-b_9/c", "A-b_9.c", true},
		{"/" + long, long, true},
		{"/a/b/c/d/e/f/g/h", "a.b.c.d.e.f.g.h", true},
		{"/a/b/c/d/e/f/g/h/i", "", false},
		{"/" + long + "a", "", false},
		{"/", "", false},
		{"", "", false},
		{"/a//b", "", false},
		{"/a/", "", false},
		{"/a.b", "", false},
		{"/a b", "", false},
		{"/a/*", "", false},
		{"/a/#", "", false},
		{"/é", "", false},
	}
	for _, c := range cases {
		key, p := routingKey(c.path)
		if c.ok {
			require.Nil(t, p, c.path)
			require.Equal(t, c.key, key, c.path)
		} else {
			require.NotNil(t, p, c.path)
			require.Equal(t, 400, p.Status)
		}
	}
}

func TestIsReserved(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]bool{
		"/v1": true, "/v1/requests/x": true, "/healthz": true, "/readyz": true, "/metrics": true,
		"/ui": true, "/ui/index.html": true,
		"/v1x/create": false, "/workflow/create": false, "/uix": false, "/v2/x": false,
		"/healthzcheck/run": false, "/metrics-feed/push": false, "/healthz/x": true,
	} {
		require.Equal(t, want, isReserved(path), path)
	}
}

func TestCheckJSONContentType(t *testing.T) {
	t.Parallel()
	for ct, ok := range map[string]bool{
		"application/json":                        true,
		"application/json; charset=utf-8":         true,
		"application/json; charset=UTF-8":         true,
		"Application/JSON":                        true,
		"application/cloudevents+json":            true,
		"application/problem+json":                true,
		"":                                        false,
		"text/plain":                              false,
		"application/xml":                         false,
		"application/json; charset=iso-8859-1":    false,
		"text/json+x":                             false,
		"application/json; =broken":               false,
		"multipart/form-data; boundary=x":         false,
		"application/x-www-form-urlencoded":       false,
		"application/jsonx":                       false,
		"application/vnd.api+json; charset=utf-8": true,
	} {
		p := checkJSONContentType(ct)
		if ok {
			require.Nil(t, p, ct)
		} else {
			require.NotNil(t, p, ct)
			require.Equal(t, 415, p.Status, ct)
		}
	}
}

func TestParseMessageID(t *testing.T) {
	t.Parallel()
	_, has, p := parseMessageID("")
	require.False(t, has)
	require.Nil(t, p)
	id, has, p := parseMessageID("61934DB2-F9D7-47E2-BE80-9706615AAE06")
	require.True(t, has)
	require.Nil(t, p)
	require.Equal(t, "61934db2-f9d7-47e2-be80-9706615aae06", id.String(), "normalised to lower case")
	for _, bad := range []string{"x", "62baf6697-20fe-4683-964a-b92779275291", "00000000-0000-0000-0000-000000000000", "61934db2f9d747e2be809706615aae06",
		"urn:uuid:61934db2-f9d7-47e2-be80-9706615aae06", "{61934db2-f9d7-47e2-be80-9706615aae06}"} {
		_, _, p = parseMessageID(bad)
		require.NotNil(t, p, bad)
	}
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	v, has, p := parseTime("1552959300136")
	require.True(t, has)
	require.Nil(t, p)
	require.Equal(t, int64(1552959300136), v)
	_, has, p = parseTime("")
	require.False(t, has)
	require.Nil(t, p)
	for _, bad := range []string{"0", "-1", "1.5", "abc", "99999999999999999999", "9007199254740993"} {
		_, _, p = parseTime(bad)
		require.NotNil(t, p, bad)
	}
}

func TestParseTimeout(t *testing.T) {
	t.Parallel()
	d, p := parseTimeout("", time.Minute, time.Hour)
	require.Nil(t, p)
	require.Equal(t, time.Minute, d)
	d, p = parseTimeout("30", time.Minute, time.Hour)
	require.Nil(t, p)
	require.Equal(t, 30*time.Second, d)
	d, p = parseTimeout("3600", time.Minute, time.Hour)
	require.Nil(t, p)
	require.Equal(t, time.Hour, d)
	for _, bad := range []string{"0", "-5", "3601", "1.5", "10s", "x"} {
		_, p = parseTimeout(bad, time.Minute, time.Hour)
		require.NotNil(t, p, bad)
	}
}

func TestParseWebhook(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"https://example.com/hook", "http://127.0.0.1:9000/x?y=1"} {
		u, p := parseWebhook(ok)
		require.Nil(t, p, ok)
		require.Equal(t, ok, u)
	}
	for _, bad := range []string{"/relative", "example.com/hook", "ftp://example.com", "https://user:pw@example.com/", "https://", "mailto:a@b.c", "http://:80/hook", "https://:443"} {
		_, p := parseWebhook(bad)
		require.NotNil(t, p, bad)
	}
}

func TestPreferWait(t *testing.T) {
	t.Parallel()
	cases := []struct {
		headers []string
		n       int
		ok      bool
	}{
		{nil, 0, false},
		{[]string{"wait=10"}, 10, true},
		{[]string{"respond-async, wait=5"}, 5, true},
		{[]string{"respond-async", "wait=7"}, 7, true},
		{[]string{"WAIT = 3"}, 3, true},
		{[]string{`wait="4"`}, 4, true},
		{[]string{"wait=4; foo=bar"}, 4, true},
		{[]string{"wait=-1"}, 0, false},
		{[]string{"wait=soon"}, 0, false},
		{[]string{"return=minimal"}, 0, false},
	}
	for _, c := range cases {
		n, ok := preferWait(c.headers)
		require.Equal(t, c.ok, ok, "%v", c.headers)
		require.Equal(t, c.n, n, "%v", c.headers)
	}
}

func TestParseWait(t *testing.T) {
	t.Parallel()
	d, p := parseWait("", time.Minute)
	require.Nil(t, p)
	require.Zero(t, d)
	d, p = parseWait("10", time.Minute)
	require.Nil(t, p)
	require.Equal(t, 10*time.Second, d)
	d, p = parseWait("600", time.Minute)
	require.Nil(t, p)
	require.Equal(t, time.Minute, d, "capped")
	for _, huge := range []string{"9223372036", "9223372036854775807"} {
		d, p = parseWait(huge, time.Minute)
		require.Nil(t, p, huge)
		require.Equal(t, time.Minute, d, "%s seconds would overflow a Duration; capped instead", huge)
	}
	for _, bad := range []string{"-1", "1.5", "x"} {
		_, p = parseWait(bad, time.Minute)
		require.NotNil(t, p, bad)
	}
}

func TestJSONDepth(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]int{
		`1`:                        0,
		`{}`:                       1,
		`{"a": [1, {"b": []}]}`:    4,
		`["[[[", "]]]"]`:           1,
		`{"s": "\"{[", "t": [[]]}`: 3,
		`[[[[[[[[[[]]]]]]]]]]`:     10,
		`{"a": "\\", "b": [{}]}`:   3,
	} {
		require.Equal(t, want, jsonDepth([]byte(body)), body)
	}
}

func TestParseExpectReplies(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want int
		ok   bool
	}{
		{"", 1, true},
		{"1", 1, true},
		{" 3 ", 3, true},
		{"100", 100, true},
		{"all", correlation.ExpectAll, true},
		{"ALL", correlation.ExpectAll, true},
		{"0", 0, false},
		{"101", 0, false},
		{"-1", 0, false},
		{"+2", 2, true}, // strconv.Atoi's reading; harmless
		{"2.5", 0, false},
		{"two", 0, false},
		{"all; window=5", 0, false},
		{"3,4", 0, false},
		{"99999999999999999999", 0, false},
	}
	for _, c := range cases {
		got, p := parseExpectReplies(c.in)
		if !c.ok {
			require.NotNil(t, p, "%q", c.in)
			require.Equal(t, 400, p.Status, "%q", c.in)
			continue
		}
		require.Nil(t, p, "%q", c.in)
		require.Equal(t, c.want, got, "%q", c.in)
	}
}

func TestParseRouteExpect(t *testing.T) {
	t.Parallel()
	routes, err := ParseRouteExpect(" survey.#=3 ,census.*=ALL,, survey.big=5")
	require.NoError(t, err)
	require.Equal(t, []RouteExpect{{"survey.#", 3}, {"census.*", correlation.ExpectAll}, {"survey.big", 5}}, routes)
	require.Equal(t, 3, defaultExpect(routes, "survey.big"), "the first match wins")
	require.Equal(t, 3, defaultExpect(routes, "survey"))
	require.Equal(t, correlation.ExpectAll, defaultExpect(routes, "census.run"))
	require.Equal(t, 1, defaultExpect(routes, "census.run.now"))
	require.Equal(t, 1, defaultExpect(nil, "a"))

	none, err := ParseRouteExpect("")
	require.NoError(t, err)
	require.Empty(t, none)
	for _, bad := range []string{"survey.#", "survey.#=", "=3", "survey.#=0", "survey.#=101", "a*=2", "a..b=2", "a=two"} {
		_, err := ParseRouteExpect(bad)
		require.Error(t, err, "%q", bad)
	}
	cfg := DefaultConfig()
	cfg.ExpectReplies = []RouteExpect{{"a.#", 0}}
	require.Error(t, cfg.Validate())
}

package main

import (
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/api"
	"github.com/switchboard-gw/switchboard/correlation"
	"github.com/switchboard-gw/switchboard/webhook"
)

func TestMaskURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"amqp://guest:guest@127.0.0.1:5672/":       "amqp://guest:xxxxx@127.0.0.1:5672/",
		"postgres://postgres@127.0.0.1:5432/db":    "postgres://postgres@127.0.0.1:5432/db",
		"postgres://u:secret@h/db?sslmode=disable": "postgres://u:xxxxx@h/db?sslmode=disable",
		"postgres://u@h/db?password=secret":        "postgres://u@h/db?password=xxxxx",
		"host=h user=u password=secret dbname=d":   "host=h user=u password=xxxxx dbname=d",
	} {
		require.Equal(t, want, maskURL(in))
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	d, err := parseDuration("90")
	require.NoError(t, err)
	require.Equal(t, 90*time.Second, d)
	d, err = parseDuration("5m")
	require.NoError(t, err)
	require.Equal(t, 5*time.Minute, d)
	_, err = parseDuration("soon")
	require.Error(t, err)
}

func TestServeConfigEnvAndFlags(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"SWITCHBOARD_HTTP_ADDR":         ":9999",
		"SWITCHBOARD_AMQP_URL":          "amqp://a:b@127.0.0.1:5673/",
		"SWITCHBOARD_MAX_BODY_BYTES":    "2048",
		"SWITCHBOARD_CLAIM_CHECK_BYTES": "1024",
		"SWITCHBOARD_MAX_BLOB_BYTES":    "8388608",
		"SWITCHBOARD_DEFAULT_TIMEOUT":   "30",
		"SWITCHBOARD_MAX_WAIT":          "2m",
		"SWITCHBOARD_MIGRATE":           "false",
		"SWITCHBOARD_EXPECT_REPLIES":    "survey.#=3, census.*=all",
	}
	c, err := loadServeConfig([]string{"-http-addr", ":7777"}, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	require.Equal(t, ":7777", c.HTTPAddr, "a flag overrides the environment")
	require.Equal(t, "amqp://a:b@127.0.0.1:5673/", c.Gateway.AMQPURL)
	require.Equal(t, int64(2048), c.API.MaxBodyBytes)
	require.Equal(t, int64(1024), c.API.ClaimCheckBytes)
	require.Equal(t, int64(8<<20), c.API.MaxBlobBytes)
	require.Equal(t, 30*time.Second, c.API.DefaultTimeout)
	require.Equal(t, 2*time.Minute, c.API.MaxWait)
	require.False(t, c.Migrate)
	require.Equal(t, defaultDatabaseURL, c.DatabaseURL)
	require.Equal(t, []api.RouteExpect{{Pattern: "survey.#", N: 3}, {Pattern: "census.*", N: correlation.ExpectAll}}, c.API.ExpectReplies)
	require.Equal(t, "survey.#=3,census.*=all", formatExpects(c.API.ExpectReplies))

	def, err := loadServeConfig(nil, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	require.Equal(t, ":8080", def.HTTPAddr)
	require.Equal(t, "amqp://guest:guest@127.0.0.1:5672/", def.Gateway.AMQPURL)
	require.Equal(t, int64(1<<20), def.API.MaxBodyBytes)
	require.Zero(t, def.API.ClaimCheckBytes, "0: the claim check starts above max body bytes")
	require.Equal(t, int64(1<<30), def.API.MaxBlobBytes)
	require.Equal(t, time.Minute, def.API.MaxWait)
	require.True(t, def.Migrate)

	for k, v := range map[string]string{
		"SWITCHBOARD_MAX_WAIT":       "forever",
		"SWITCHBOARD_MIGRATE":        "maybe",
		"SWITCHBOARD_PREFETCH":       "0",
		"SWITCHBOARD_LOG_LEVEL":      "loud",
		"SWITCHBOARD_MAX_BODY_BYTES": "-1",
		"SWITCHBOARD_TLS_CERT_FILE":  "/nonexistent/cert.pem", // and no key
		"SWITCHBOARD_CORS_ORIGINS":   "app.example.com",       // not an origin
		"SWITCHBOARD_EXPECT_REPLIES": "survey.#=0",
	} {
		_, err := loadServeConfig(nil, func(key string) string {
			if key == k {
				return v
			}
			return ""
		}, io.Discard)
		require.Error(t, err, "%s=%s", k, v)
	}
}

func TestServeConfigWebhooks(t *testing.T) {
	t.Parallel()
	off, err := loadServeConfig(nil, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	require.False(t, off.WebhooksOn(), "no secret, no webhooks")
	require.Equal(t, webhook.DefaultSchedule, off.Webhooks.Schedule)

	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	env := map[string]string{
		"SWITCHBOARD_WEBHOOK_SECRETS":  secret + " whsec_ZGV2ZWxvcG1lbnQtb25seS1ub3QtYS1zZWNyZXQ=",
		"SWITCHBOARD_WEBHOOK_ALLOW":    "10.1.0.0/16, hooks.internal",
		"SWITCHBOARD_WEBHOOK_SCHEDULE": "0s,1s,1m",
		"SWITCHBOARD_WEBHOOK_TIMEOUT":  "5",
	}
	c, err := loadServeConfig(nil, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	require.True(t, c.WebhooksOn())
	require.Len(t, c.Webhooks.Secrets, 2)
	require.Equal(t, []time.Duration{0, time.Second, time.Minute}, c.Webhooks.Schedule)
	require.Equal(t, 5*time.Second, c.Webhooks.Timeout)
	require.NoError(t, c.WebhookPolicy.Check(netip.MustParseAddr("10.1.2.3")))
	require.Error(t, c.WebhookPolicy.Check(netip.MustParseAddr("10.2.0.1")))
	require.Equal(t, []string{"hooks.internal"}, c.WebhookPolicy.AllowHosts)

	logged := fmt.Sprintln(c.logAttrs()...)
	require.NotContains(t, logged, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "the start-up log never shows a secret")
	require.Contains(t, logged, "webhook_secrets 2")

	for k, v := range map[string]string{
		"SWITCHBOARD_WEBHOOK_SECRETS":  "not-a-secret",
		"SWITCHBOARD_WEBHOOK_ALLOW":    "10.0.0.0/33",
		"SWITCHBOARD_WEBHOOK_SCHEDULE": "0s,soon",
	} {
		_, err := loadServeConfig(nil, func(key string) string {
			if key == k {
				return v
			}
			return ""
		}, io.Discard)
		require.Error(t, err, "%s=%s", k, v)
	}
}

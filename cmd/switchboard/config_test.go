package main

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
		"SWITCHBOARD_HTTP_ADDR":       ":9999",
		"SWITCHBOARD_AMQP_URL":        "amqp://a:b@127.0.0.1:5673/",
		"SWITCHBOARD_MAX_BODY_BYTES":  "2048",
		"SWITCHBOARD_DEFAULT_TIMEOUT": "30",
		"SWITCHBOARD_MAX_WAIT":        "2m",
		"SWITCHBOARD_MIGRATE":         "false",
	}
	c, err := loadServeConfig([]string{"-http-addr", ":7777"}, func(k string) string { return env[k] }, io.Discard)
	require.NoError(t, err)
	require.Equal(t, ":7777", c.HTTPAddr, "a flag overrides the environment")
	require.Equal(t, "amqp://a:b@127.0.0.1:5673/", c.Gateway.AMQPURL)
	require.Equal(t, int64(2048), c.API.MaxBodyBytes)
	require.Equal(t, 30*time.Second, c.API.DefaultTimeout)
	require.Equal(t, 2*time.Minute, c.API.MaxWait)
	require.False(t, c.Migrate)
	require.Equal(t, defaultDatabaseURL, c.DatabaseURL)

	def, err := loadServeConfig(nil, func(string) string { return "" }, io.Discard)
	require.NoError(t, err)
	require.Equal(t, ":8080", def.HTTPAddr)
	require.Equal(t, "amqp://guest:guest@127.0.0.1:5672/", def.Gateway.AMQPURL)
	require.Equal(t, int64(1<<20), def.API.MaxBodyBytes)
	require.Equal(t, time.Minute, def.API.MaxWait)
	require.True(t, def.Migrate)

	for k, v := range map[string]string{
		"SWITCHBOARD_MAX_WAIT":       "forever",
		"SWITCHBOARD_MIGRATE":        "maybe",
		"SWITCHBOARD_PREFETCH":       "0",
		"SWITCHBOARD_LOG_LEVEL":      "loud",
		"SWITCHBOARD_MAX_BODY_BYTES": "-1",
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

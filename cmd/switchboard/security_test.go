package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// Header abuse against the real binary (issue 8): a client that trickles
// its headers is cut off by ReadHeaderTimeout (10 s), and one whose headers
// pass MaxHeaderBytes (64 KiB) is answered 431. Loopback only.
func TestHeaderAbuseIsCutOff(t *testing.T) {
	t.Parallel()
	p := start(t, env(testsvc.Database(t), testsvc.AMQPURL(t), testsvc.BrokerNames(t)), "serve")
	require.True(t, strings.HasPrefix(p.addr, "127.0.0.1:"), "the server listens on loopback: %s", p.addr)

	t.Run("slow headers", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		require.NoError(t, err)
		defer conn.Close()
		began := time.Now()
		_, err = io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
		require.NoError(t, err)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			// One header byte every half second: each is well within any
			// per-read limit, but the header never ends.
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte("a")); err != nil {
						return
					}
				}
			}
		}()
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(15*time.Second)))
		got, err := io.ReadAll(conn) // until the server closes the connection
		elapsed := time.Since(began)
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server still held the connection after 15s")
		require.NotContains(t, string(got), "200 OK", "a request whose headers never ended was served")
		require.GreaterOrEqual(t, elapsed, 9*time.Second, "cut off before ReadHeaderTimeout: %v (%q)", elapsed, got)
		require.Less(t, elapsed, 15*time.Second)
	})

	t.Run("oversized headers", func(t *testing.T) {
		status := func(headerBytes int) int {
			conn, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
			require.NoError(t, err)
			defer conn.Close()
			require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
			// Written alongside the read: the server may answer and close
			// before it has read everything, and the write then fails.
			go func() {
				_, _ = io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: "+
					strings.Repeat("a", headerBytes)+"\r\n\r\n")
			}()
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err)
			defer res.Body.Close()
			return res.StatusCode
		}
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, status(128<<10), "a 128 KiB header")
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, status(1<<20), "a 1 MiB header")
		require.Equal(t, http.StatusOK, status(32<<10), "a 32 KiB header is within the limit")
	})

	t.Run("many headers", func(t *testing.T) {
		req, err := http.NewRequest("GET", "http://"+p.addr+"/healthz", nil)
		require.NoError(t, err)
		for i := range 5000 {
			req.Header.Add("X-Many", strings.Repeat("b", 20)+string(rune('a'+i%26)))
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, res.StatusCode, "5000 small headers add up past the limit")
	})

	// The server is still healthy for everyone else.
	res, err := http.Get("http://" + p.addr + "/healthz")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 200, res.StatusCode)
}

package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCheckBlocksInternalAddresses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		addr, class string
	}{
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "unspecified"},
		{"::", "unspecified"},
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"::1", "loopback"},
		{"10.0.0.1", "private"},
		{"10.255.255.255", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"fc00::1", "private"},
		{"fd12:3456::1", "private"},
		{"169.254.169.254", "link-local"},
		{"169.254.0.1", "link-local"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"100.127.255.255", "carrier-grade NAT"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"ff02::1", "multicast"},
		{"255.255.255.255", "broadcast"},
		{"240.0.0.1", "reserved"},
		{"255.255.255.254", "reserved"},
		{"198.18.0.1", "benchmarking"},
		{"198.19.255.255", "benchmarking"},
		{"fec0::1", "site-local"},
		{"192.0.0.8", "IETF protocol assignment"},
		{"192.0.2.1", "documentation"},
		{"198.51.100.7", "documentation"},
		{"203.0.113.9", "documentation"},
		{"2001:db8::1", "documentation"},
		{"2001::1", "IETF protocol assignment"}, // Teredo
		{"100::1", "discard-only"},
		{"64:ff9b:1::1", "local-use NAT64"},

		// IPv4 in IPv6 clothing.
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:10.0.0.1", "private"},
		{"::ffff:169.254.169.254", "link-local"},
		{"64:ff9b::a00:1", "private"},        // NAT64 of 10.0.0.1
		{"64:ff9b::7f00:1", "loopback"},      // NAT64 of 127.0.0.1
		{"::10.0.0.1", "private"},            // IPv4-compatible
		{"::ffff:0:a9fe:a9fe", "link-local"}, // IPv4-translated 169.254.169.254
		{"2002:a00:1::1", "private"},         // 6to4 of 10.0.0.1
	}
	for _, c := range cases {
		t.Run(c.addr, func(t *testing.T) {
			t.Parallel()
			ip := netip.MustParseAddr(c.addr)
			err := Policy{}.Check(ip)
			var blocked *BlockedError
			require.ErrorAs(t, err, &blocked)
			require.Equal(t, c.class, blocked.Reason)
			require.Equal(t, ip, blocked.Addr)
			require.Contains(t, err.Error(), c.class+" address")
		})
	}
}

func TestCheckPassesPublicAddresses(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{
		"93.184.215.14", "8.8.8.8", "1.1.1.1",
		"172.32.0.1", "100.128.0.1", "192.0.1.1", "198.20.0.1", "223.255.255.255",
		"2606:4700::1111", "2a00:1450:4001:80b::200e",
		"::ffff:93.184.215.14", "64:ff9b::5db8:d70e", "2002:5db8:d70e::1",
	} {
		require.NoError(t, Policy{}.Check(netip.MustParseAddr(addr)), addr)
	}
}

func TestCheckRefusesTheZeroAddress(t *testing.T) {
	t.Parallel()
	var blocked *BlockedError
	require.ErrorAs(t, Policy{}.Check(netip.Addr{}), &blocked)
	require.Equal(t, "invalid", blocked.Reason)
}

func TestCheckHonoursTheAllowList(t *testing.T) {
	t.Parallel()
	p, err := ParseAllowList("10.0.0.0/8, 127.0.0.1 ::1")
	require.NoError(t, err)
	cases := []struct {
		addr    string
		allowed bool
	}{
		{"10.1.2.3", true},
		{"::ffff:10.1.2.3", true},
		{"64:ff9b::a01:203", true}, // NAT64 of 10.1.2.3
		{"127.0.0.1", true},
		{"::ffff:127.0.0.1", true},
		{"127.0.0.2", false},
		{"::1", true},
		{"192.168.0.1", false},
		{"169.254.169.254", false},
		{"93.184.215.14", true},
	}
	for _, c := range cases {
		err := p.Check(netip.MustParseAddr(c.addr))
		if c.allowed {
			require.NoError(t, err, c.addr)
		} else {
			require.Error(t, err, c.addr)
		}
	}
}

func TestBlockedErrorMessage(t *testing.T) {
	t.Parallel()
	err := &BlockedError{Host: "x", Addr: netip.MustParseAddr("10.0.0.1"), Reason: "private"}
	require.Equal(t, `webhook: 10.0.0.1 (host "x") is a private address`, err.Error())
	err = &BlockedError{Addr: netip.MustParseAddr("::"), Reason: "unspecified"}
	require.Equal(t, `webhook: :: is an unspecified address`, err.Error())
}

func TestParseAllowList(t *testing.T) {
	t.Parallel()
	p, err := ParseAllowList("")
	require.NoError(t, err)
	require.Equal(t, Policy{}, p)

	p, err = ParseAllowList(" 10.0.0.0/8,fd00::/8\t127.0.0.1 , ::1\nHooks.Internal. 10.9.8.7/16 ::ffff:192.168.0.0/112 my_svc.local")
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("fd00::/8"),
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("10.9.0.0/16"),
		netip.MustParsePrefix("192.168.0.0/16"),
	}, p.Allow)
	require.Equal(t, []string{"hooks.internal", "my_svc.local"}, p.AllowHosts)
	require.Equal(t, "10.0.0.0/8, fd00::/8, 127.0.0.1, ::1, 10.9.0.0/16, 192.168.0.0/16, hooks.internal, my_svc.local", p.String())
	again, err := ParseAllowList(p.String())
	require.NoError(t, err)
	require.Equal(t, p, again)
	require.Empty(t, Policy{}.String())

	for _, bad := range []string{
		"10.0.0.0/33", "10.0.0.0/x", "300.1.1.1", "10.0.0.256", "1.2.3", "0x7f.1", "::g",
		"fe80::1%eth0", "bad!host", "-bad.example", "bad..example", "a/b",
	} {
		_, err := ParseAllowList("10.0.0.0/8, " + bad)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), `"`+bad+`"`, "the error names the entry")
	}
}

// fakeResolver answers from a map and never touches DNS.
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := f[strings.TrimSuffix(strings.ToLower(host), ".")]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	ips := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		ips[i] = netip.MustParseAddr(a)
	}
	return ips, nil
}

// errNotDialled is what the recording dialer answers instead of connecting.
var errNotDialled = errors.New("recorded, not dialled")

// recorder is a DialFunc that records every address it is asked for. It
// connects only to loopback addresses, and only when loopback is set;
// everything else fails with errNotDialled without a packet being sent.
type recorder struct {
	loopback bool
	connect  map[string]bool // addresses that "connect" (to one end of a pipe)

	mu    sync.Mutex
	addrs []string
}

func (r *recorder) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	r.mu.Lock()
	r.addrs = append(r.addrs, addr)
	r.mu.Unlock()
	if r.connect[addr] {
		client, server := net.Pipe()
		_ = server.Close()
		return client, nil
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil && r.loopback && ap.Addr().IsLoopback() {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return nil, errNotDialled
}

func (r *recorder) dialled() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.addrs...)
}

var testResolver = fakeResolver{
	"private.example":  {"10.1.2.3"},
	"metadata.example": {"169.254.169.254"},
	"mixed.example":    {"93.184.215.14", "10.0.0.1"},
	"mapped.example":   {"::ffff:127.0.0.1"},
	"public.example":   {"93.184.215.14", "2606:4700::1111"},
	"hooks.internal":   {"10.1.2.3"},
}

func TestDialContextRefusesInternalAddressesWithoutDialling(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{
		"127.0.0.1:80", "[::1]:80", "169.254.169.254:80", "10.0.0.1:443", "[::ffff:10.0.0.1]:80",
		"[fe80::1%eth0]:80", "private.example:443", "metadata.example:80", "mixed.example:443", "mapped.example:80",
	} {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			rec := &recorder{}
			g := NewGuard(Policy{}, testResolver, rec.dial)
			conn, err := g.DialContext(context.Background(), "tcp", addr)
			require.Nil(t, conn)
			var blocked *BlockedError
			require.ErrorAs(t, err, &blocked)
			host, _, _ := net.SplitHostPort(addr)
			require.Equal(t, host, blocked.Host)
			require.Empty(t, rec.dialled(), "nothing may be dialled")
		})
	}
}

func TestDialContextDialsTheCheckedAddressNotTheName(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	g := NewGuard(Policy{}, testResolver, rec.dial)
	_, err := g.DialContext(context.Background(), "tcp", "public.example:443")
	require.ErrorIs(t, err, errNotDialled)
	require.Equal(t, []string{"93.184.215.14:443", "[2606:4700::1111]:443"}, rec.dialled(),
		"each checked address is tried in order, never the name")
}

func TestDialContextStopsAtTheFirstAddressThatConnects(t *testing.T) {
	t.Parallel()
	rec := &recorder{connect: map[string]bool{"93.184.215.14:443": true}}
	g := NewGuard(Policy{}, testResolver, rec.dial)
	conn, err := g.DialContext(context.Background(), "tcp", "public.example:443")
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	require.Equal(t, []string{"93.184.215.14:443"}, rec.dialled())
}

func TestDialContextDialsAllowListedHostsAndAddresses(t *testing.T) {
	t.Parallel()
	p, err := ParseAllowList("hooks.internal 192.168.7.0/24")
	require.NoError(t, err)
	rec := &recorder{}
	g := NewGuard(p, testResolver, rec.dial)

	_, err = g.DialContext(context.Background(), "tcp", "HOOKS.internal.:8080")
	require.ErrorIs(t, err, errNotDialled)
	_, err = g.DialContext(context.Background(), "tcp", "192.168.7.9:80")
	require.ErrorIs(t, err, errNotDialled)
	require.Equal(t, []string{"10.1.2.3:8080", "192.168.7.9:80"}, rec.dialled())

	// The host allow-list is for that name only.
	_, err = g.DialContext(context.Background(), "tcp", "private.example:8080")
	var blocked *BlockedError
	require.ErrorAs(t, err, &blocked)
	require.Len(t, rec.dialled(), 2)
}

func TestDialContextRefusesOtherNetworksAndBadAddresses(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	g := NewGuard(Policy{}, testResolver, rec.dial)
	for _, c := range []struct{ network, addr string }{
		{"udp", "public.example:53"},
		{"unix", "/run/x.sock"},
		{"tcp", "public.example"},
		{"tcp", ":80"},
		{"tcp", "unknown.example:80"},
	} {
		_, err := g.DialContext(context.Background(), c.network, c.addr)
		require.Error(t, err, c)
	}
	require.Empty(t, rec.dialled())
}

// acceptLog accepts connections on a loopback listener and records their
// remote addresses, in order.
type acceptLog struct {
	ln     net.Listener
	remote chan string
}

func newAcceptLog(t *testing.T) *acceptLog {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	a := &acceptLog{ln: ln, remote: make(chan string, 16)}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				close(a.remote)
				return
			}
			a.remote <- conn.RemoteAddr().String()
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return a
}

// next returns the remote address of the next accepted connection.
func (a *acceptLog) next(t *testing.T) string {
	t.Helper()
	select {
	case remote := <-a.remote:
		return remote
	case <-time.After(5 * time.Second):
		t.Fatal("no connection was accepted")
		return ""
	}
}

// requireNoEarlierConnection connects a sentinel and requires it to be the
// first connection the listener accepted: a refused dial must not have
// reached the listener. Accept is first come, first served.
func (a *acceptLog) requireNoEarlierConnection(t *testing.T) {
	t.Helper()
	sentinel, err := net.Dial("tcp", a.ln.Addr().String())
	require.NoError(t, err)
	defer sentinel.Close()
	require.Equal(t, sentinel.LocalAddr().String(), a.next(t), "a refused dial reached the listener")
}

func TestDefaultDialerChecksTheAddressAtConnect(t *testing.T) {
	t.Parallel()
	a := newAcceptLog(t)
	g := NewGuard(Policy{}, fakeResolver{}, nil)

	// g.dial is the dialer behind the guard's own checks: it must refuse
	// on its own, before the socket connects.
	conn, err := g.dial(context.Background(), "tcp", a.ln.Addr().String())
	require.Nil(t, conn)
	var blocked *BlockedError
	require.ErrorAs(t, err, &blocked)
	require.Equal(t, "loopback", blocked.Reason)

	// The mark that lets an allow-listed host's address through is for
	// that one address.
	ctx := context.WithValue(context.Background(), approvedKey{}, netip.MustParseAddr("127.0.0.2"))
	_, err = g.dial(ctx, "tcp", a.ln.Addr().String())
	require.ErrorAs(t, err, &blocked)

	a.requireNoEarlierConnection(t)
}

func TestDefaultDialerConnectsWhenAllowed(t *testing.T) {
	t.Parallel()
	a := newAcceptLog(t)
	p, err := ParseAllowList("127.0.0.1/32")
	require.NoError(t, err)
	g := NewGuard(p, fakeResolver{}, nil)

	conn, err := g.DialContext(context.Background(), "tcp", a.ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	require.Equal(t, conn.LocalAddr().String(), a.next(t))
}

func TestDefaultDialerConnectsToAllowListedHostNames(t *testing.T) {
	t.Parallel()
	a := newAcceptLog(t)
	p, err := ParseAllowList("hooks.internal")
	require.NoError(t, err)
	g := NewGuard(p, fakeResolver{"hooks.internal": {"127.0.0.1"}, "other.internal": {"127.0.0.1"}}, nil)
	_, port, _ := net.SplitHostPort(a.ln.Addr().String())

	// The control hook lets through the address of the allow-listed name
	// although 127.0.0.1 itself is not allowed...
	conn, err := g.DialContext(context.Background(), "tcp", net.JoinHostPort("hooks.internal", port))
	require.NoError(t, err)
	defer conn.Close()
	require.Equal(t, conn.LocalAddr().String(), a.next(t))

	// ...and nothing else.
	_, err = g.DialContext(context.Background(), "tcp", net.JoinHostPort("other.internal", port))
	var blocked *BlockedError
	require.ErrorAs(t, err, &blocked)
}

func TestClientNeverFollowsRedirects(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://10.0.0.1/", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	p, err := ParseAllowList("127.0.0.1 ::1")
	require.NoError(t, err)
	rec := &recorder{loopback: true}
	client := NewClient(NewGuard(p, testResolver, rec.dial), 5*time.Second)

	resp, err := client.Post(srv.URL+"/hook", "application/json", strings.NewReader(`{}`))
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusFound, resp.StatusCode)
	require.Equal(t, "http://10.0.0.1/", resp.Header.Get("Location"))
	require.Equal(t, []string{strings.TrimPrefix(srv.URL, "http://")}, rec.dialled(), "no attempt at 10.0.0.1")
}

func TestClientRefusesBlockedURLs(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	client := NewClient(NewGuard(Policy{}, testResolver, rec.dial), 5*time.Second)
	for _, u := range []string{
		"http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "https://private.example/hook", "http://[::1]:8080/",
	} {
		resp, err := client.Get(u)
		if resp != nil {
			_ = resp.Body.Close()
		}
		var blocked *BlockedError
		require.ErrorAs(t, err, &blocked, u)
	}
	require.Empty(t, rec.dialled())
}

func TestClientIgnoresEnvironmentProxies(t *testing.T) {
	t.Parallel()
	client := NewClient(NewGuard(Policy{}, testResolver, (&recorder{}).dial), time.Second)
	transport, ok := client.Transport.(*http.Transport)
	require.True(t, ok)
	require.Nil(t, transport.Proxy, "a proxy would connect on the guard's behalf")
	require.NotNil(t, transport.DialContext)
	require.True(t, transport.ForceAttemptHTTP2)
	require.Equal(t, time.Second, client.Timeout)
}

func TestValidateURL(t *testing.T) {
	t.Parallel()
	allowLocal, err := ParseAllowList("127.0.0.1")
	require.NoError(t, err)
	cases := []struct {
		raw    string
		policy Policy
		err    string // a part of the error; empty when the URL is valid
	}{
		{"https://hooks.example.com/switchboard?x=1", Policy{}, ""},
		{"https://Hooks.Example.com/", Policy{}, ""},
		{"http://93.184.215.14:8080/hook", Policy{}, ""},
		{"http://[2606:4700::1111]/hook", Policy{}, ""},
		{"http://localhost/hook", Policy{}, ""}, // a name: checked when connecting
		{"http://bad.cafe/", Policy{}, ""},
		{"http://127.0.0.1:9000/hook", allowLocal, ""},

		{"", Policy{}, "absolute http or https"},
		{"/relative/hook", Policy{}, "absolute http or https"},
		{"ftp://hooks.example.com/", Policy{}, "absolute http or https"},
		{"http:hooks.example.com", Policy{}, "absolute http or https"},
		{"https://", Policy{}, "no host"},
		{"https://:443/", Policy{}, "no host"},
		{"https://user:pw@hooks.example.com/", Policy{}, "credentials"},
		{"https://token@hooks.example.com/", Policy{}, "credentials"},
		{"https://hooks.example.com/#frag", Policy{}, "fragment"},
		{"https://hooks.example.com/#", Policy{}, "fragment"},
		{"https://hooks.example.com/" + strings.Repeat("a", 2048), Policy{}, "longer than 2048"},
		{"https://hooks.example.com:0/", Policy{}, "port"},
		{"https://hooks.example.com:70000/", Policy{}, "port"},
		{"http://%zz/", Policy{}, "cannot be parsed"},
		{"http://127.0.0.1/", Policy{}, "a loopback address"},
		{"http://127.0.0.2:9000/", allowLocal, "a loopback address"},
		{"http://[::1]/", Policy{}, "a loopback address"},
		{"http://[::ffff:127.0.0.1]/", Policy{}, "a loopback address"},
		{"http://169.254.169.254/latest/meta-data/", Policy{}, "a link-local address"},
		{"http://10.0.0.1/", Policy{}, "a private address"},
		{"http://[fe80::1%25eth0]/", Policy{}, "a link-local address"},
		{"http://2130706433/", Policy{}, "numeric host names"},
		{"http://0x7f.1/", Policy{}, "numeric host names"},
		{"http://0x7f000001/", Policy{}, "numeric host names"},
		{"http://127.1/", Policy{}, "numeric host names"},
		{"http://0177.0.0.1/", Policy{}, "numeric host names"},
		{"http://127.0.0.1./", Policy{}, "numeric host names"},
	}
	for _, c := range cases {
		u, err := ValidateURL(c.raw, c.policy)
		if c.err == "" {
			require.NoError(t, err, c.raw)
			require.Equal(t, c.raw, u.String())
			continue
		}
		require.Error(t, err, c.raw)
		require.Contains(t, err.Error(), c.err, c.raw)
		require.NotContains(t, err.Error(), "webhook:", "a sentence for the client, not a Go error chain")
	}
}

package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
)

// Policy is the operator's allow-list: addresses and host names a webhook
// may reach although they are internal. The zero Policy allows nothing
// internal.
type Policy struct {
	// Allow lists address ranges that are let through even when they are in
	// a blocked range. Addresses are compared after unmapping IPv4-mapped
	// IPv6, so list IPv4 ranges in their IPv4 form.
	Allow []netip.Prefix
	// AllowHosts lists host names, lower-case and without a trailing dot,
	// that are dialled without any address check (exact match, no
	// wildcards). Their addresses come from the resolver, so only list names
	// whose DNS the operator controls.
	AllowHosts []string
}

// ParseAllowList reads an allow-list: entries separated by commas and/or
// white space, each a CIDR prefix (10.0.0.0/8, fd00::/8), a single IP
// address (127.0.0.1, ::1) or a host name (hooks.internal). An empty string
// gives the empty Policy.
func ParseAllowList(s string) (Policy, error) {
	var p Policy
	entries := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	for _, e := range entries {
		if err := p.add(e); err != nil {
			return Policy{}, fmt.Errorf("webhook allow-list entry %q: %w", e, err)
		}
	}
	return p, nil
}

// String renders the allow-list as ParseAllowList reads it, entries
// separated by ", "; the empty Policy renders as "".
func (p Policy) String() string {
	entries := make([]string, 0, len(p.Allow)+len(p.AllowHosts))
	for _, prefix := range p.Allow {
		if prefix.IsSingleIP() {
			entries = append(entries, prefix.Addr().String())
		} else {
			entries = append(entries, prefix.String())
		}
	}
	entries = append(entries, p.AllowHosts...)
	return strings.Join(entries, ", ")
}

// add parses one allow-list entry into p.
func (p *Policy) add(entry string) error {
	if strings.Contains(entry, "/") {
		prefix, err := netip.ParsePrefix(entry)
		if err != nil {
			return errors.New("not a CIDR prefix such as 10.0.0.0/8 or fd00::/8")
		}
		p.Allow = append(p.Allow, unmapPrefix(prefix))
		return nil
	}
	if addr, err := netip.ParseAddr(entry); err == nil {
		if addr.Zone() != "" {
			return errors.New("IPv6 zones are not accepted")
		}
		addr = addr.Unmap()
		p.Allow = append(p.Allow, netip.PrefixFrom(addr, addr.BitLen()))
		return nil
	}
	host := strings.TrimSuffix(strings.ToLower(entry), ".")
	if strings.Contains(host, ":") || endsInNumber(host) {
		return errors.New("not a valid IP address")
	}
	if !validHostName(host) {
		return errors.New("not a valid IP address, CIDR prefix or host name")
	}
	p.AllowHosts = append(p.AllowHosts, host)
	return nil
}

// unmapPrefix turns an IPv4-mapped IPv6 prefix into its IPv4 form, because
// Check compares unmapped addresses, and drops host bits.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// validHostName reports whether host is a DNS name: dot-separated labels of
// letters, digits, hyphens and underscores, none empty or longer than 63
// characters, none starting or ending with a hyphen.
func validHostName(host string) bool {
	if host == "" || len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// endsInNumber reports whether the last label of host is a number as the
// classic inet_aton parser reads one (decimal, 0x hex or 0-prefixed octal).
// Such names are IPv4 addresses in disguise: 2130706433, 0x7f.1 and 127.1
// all mean 127.0.0.1 to some resolvers and browsers, and no real top-level
// domain is numeric.
func endsInNumber(host string) bool {
	host = strings.TrimSuffix(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	if hex, ok := strings.CutPrefix(strings.ToLower(last), "0x"); ok {
		return strings.Trim(hex, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

// allows reports whether an allow-listed prefix contains ip.
func (p Policy) allows(ip netip.Addr) bool {
	for _, prefix := range p.Allow {
		if prefix.Contains(ip) {
			return true
		}
	}
	return false
}

// allowsHost reports whether host is an allow-listed host name.
func (p Policy) allowsHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, h := range p.AllowHosts {
		if h == host {
			return true
		}
	}
	return false
}

// BlockedError is the error of a connection the guard refused.
type BlockedError struct {
	Host   string     // the host name being dialled; empty when Check was called directly
	Addr   netip.Addr // the refused address
	Reason string     // its class: "loopback", "private", "link-local", ...
}

// Error says which address was refused and why.
func (e *BlockedError) Error() string {
	class := withArticle(e.Reason) + " address"
	if e.Host == "" || e.Host == e.Addr.String() {
		return fmt.Sprintf("webhook: %s is %s", e.Addr, class)
	}
	return fmt.Sprintf("webhook: %s (host %q) is %s", e.Addr, e.Host, class)
}

// withArticle puts "a" or "an" before a class name.
func withArticle(s string) string {
	if s != "" && strings.ContainsRune("aeiouAEIOU", rune(s[0])) {
		return "an " + s
	}
	return "a " + s
}

// blockedRange is an address range webhooks may not reach, and its class.
type blockedRange struct {
	prefix netip.Prefix
	class  string
}

// blockedRanges are the special-purpose ranges of the IANA registries that
// are not the public internet. The first match names the class, so a
// narrower range comes before the range containing it.
var blockedRanges = func() []blockedRange {
	table := []struct{ cidr, class string }{
		{"0.0.0.0/8", "unspecified"}, // "this network"
		{"127.0.0.0/8", "loopback"},
		{"10.0.0.0/8", "private"},
		{"172.16.0.0/12", "private"},
		{"192.168.0.0/16", "private"},
		{"169.254.0.0/16", "link-local"}, // includes the cloud metadata address 169.254.169.254
		{"100.64.0.0/10", "carrier-grade NAT"},
		{"224.0.0.0/4", "multicast"},
		{"255.255.255.255/32", "broadcast"},
		{"240.0.0.0/4", "reserved"},
		{"198.18.0.0/15", "benchmarking"},
		{"192.0.0.0/24", "IETF protocol assignment"},
		{"192.0.2.0/24", "documentation"},
		{"198.51.100.0/24", "documentation"},
		{"203.0.113.0/24", "documentation"},

		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"fc00::/7", "private"}, // unique-local
		{"fe80::/10", "link-local"},
		{"fec0::/10", "site-local"},
		{"ff00::/8", "multicast"},
		{"100::/64", "discard-only"},
		{"64:ff9b:1::/48", "local-use NAT64"},
		{"2001:2::/48", "benchmarking"},
		{"2001::/23", "IETF protocol assignment"}, // includes Teredo 2001::/32
		{"2001:db8::/32", "documentation"},
		{"3fff::/20", "documentation"},
	}
	ranges := make([]blockedRange, len(table))
	for i, r := range table {
		ranges[i] = blockedRange{netip.MustParsePrefix(r.cidr), r.class}
	}
	return ranges
}()

// classify returns the class of a blocked address, or "" for an address
// that is not in any blocked range.
func classify(ip netip.Addr) string {
	for _, r := range blockedRanges {
		if r.prefix.Contains(ip) {
			return r.class
		}
	}
	return ""
}

// Prefixes of IPv6 addresses that carry an IPv4 address a packet may end up
// at: through a NAT64 or SIIT translator, a 6to4 relay, or a stack that
// still honours the deprecated IPv4-compatible form.
var (
	nat64Prefix         = netip.MustParsePrefix("64:ff9b::/96")
	ipv4CompatPrefix    = netip.MustParsePrefix("::/96")
	ipv4TranslatePrefix = netip.MustParsePrefix("::ffff:0:0:0/96")
	sixToFourPrefix     = netip.MustParsePrefix("2002::/16")
)

// embeddedIPv4 returns the IPv4 address carried inside an IPv6 address of
// one of the translation forms.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	switch {
	case nat64Prefix.Contains(ip), ipv4CompatPrefix.Contains(ip), ipv4TranslatePrefix.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFourPrefix.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// Check returns nil when a webhook may connect to ip, and a *BlockedError
// when ip is in a blocked range that the policy does not allow. IPv4-mapped
// IPv6 addresses are checked as the IPv4 address they are, and an IPv4
// address embedded in a NAT64, IPv4-translated, IPv4-compatible or 6to4
// address is checked too.
func (p Policy) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return &BlockedError{Addr: ip, Reason: "invalid"}
	}
	// Prefix.Contains never matches an address with a zone, so fe80::1%eth0
	// would otherwise slip past fe80::/10.
	addr := ip.WithZone("").Unmap()
	if p.allows(addr) {
		return nil
	}
	if class := classify(addr); class != "" {
		return &BlockedError{Addr: ip, Reason: class}
	}
	if v4, ok := embeddedIPv4(addr); ok && !p.allows(v4) {
		if class := classify(v4); class != "" {
			return &BlockedError{Addr: ip, Reason: class}
		}
	}
	return nil
}

// Resolver looks up the addresses of a host name. *net.Resolver satisfies
// it; tests give a fake one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DialFunc connects to an address; (*net.Dialer).DialContext is one.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Guard makes the connections of webhook deliveries. A webhook URL is
// chosen by a client, so the guard refuses loopback, private, link-local,
// cloud-metadata and other internal addresses unless the operator
// allow-listed them, checks every address a name resolves to, and connects
// to the checked address itself, so that DNS rebinding between the check
// and the connect cannot get around it. It is safe for concurrent use.
type Guard struct {
	policy   Policy
	resolver Resolver
	dial     DialFunc
}

// NewGuard returns a guard enforcing p. A nil r means net.DefaultResolver. A
// nil dial means a net.Dialer whose control hook checks, once more, the
// address the socket is actually connecting to.
func NewGuard(p Policy, r Resolver, dial DialFunc) *Guard {
	g := &Guard{policy: p, resolver: r, dial: dial}
	if g.resolver == nil {
		g.resolver = net.DefaultResolver
	}
	if g.dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, ControlContext: g.control}
		g.dial = d.DialContext
	}
	return g
}

// approvedKey marks a dial context with the one address the guard dials
// without checks: an address of an allow-listed host name.
type approvedKey struct{}

// control is the default dialer's last check, run on the socket before it
// connects: defence in depth should a code path ever dial something the
// guard did not check.
func (g *Guard) control(ctx context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook: unexpected address %q at connect: %w", address, err)
	}
	if approved, ok := ctx.Value(approvedKey{}).(netip.Addr); ok && approved == ap.Addr().WithZone("").Unmap() {
		return nil
	}
	return g.policy.Check(ap.Addr())
}

// DialContext connects to addr (host:port) for a webhook delivery. An IP
// literal is checked; an allow-listed host name is resolved and dialled
// without checks; any other name is resolved and refused if any of its
// addresses is blocked. The checked addresses themselves are dialled, in the
// resolver's order until one connects, never the name, so a second DNS
// answer cannot change where the connection goes.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("webhook: network %q is not supported", network)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("webhook: dial %q: %w", addr, err)
	}
	if host == "" {
		return nil, fmt.Errorf("webhook: dial %q: no host", addr)
	}
	ips, trusted, err := g.addresses(ctx, network, host)
	if err != nil {
		return nil, err
	}
	return g.dialEach(ctx, network, port, ips, trusted)
}

// addresses returns the addresses to dial for host, and whether they are
// trusted: those of an allow-listed host name are not checked.
func (g *Guard) addresses(ctx context.Context, network, host string) ([]netip.Addr, bool, error) {
	if ip, parseErr := netip.ParseAddr(host); parseErr == nil {
		if err := g.policy.Check(ip); err != nil {
			return nil, false, withHost(err, host)
		}
		return []netip.Addr{ip}, false, nil
	}
	ips, err := g.resolver.LookupNetIP(ctx, lookupNetwork(network), host)
	if err != nil {
		return nil, false, fmt.Errorf("webhook: resolve %q: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, false, fmt.Errorf("webhook: resolve %q: no addresses", host)
	}
	if g.policy.allowsHost(host) {
		return ips, true, nil
	}
	for _, ip := range ips {
		if err := g.policy.Check(ip); err != nil {
			return nil, false, withHost(err, host)
		}
	}
	return ips, false, nil
}

// withHost records the host name in a *BlockedError.
func withHost(err error, host string) error {
	var blocked *BlockedError
	if errors.As(err, &blocked) {
		blocked.Host = host
	}
	return err
}

// lookupNetwork maps a dial network to the resolver's network.
func lookupNetwork(network string) string {
	switch network {
	case "tcp4":
		return "ip4"
	case "tcp6":
		return "ip6"
	default:
		return "ip"
	}
}

// dialEach dials the addresses in order and returns the first connection.
func (g *Guard) dialEach(ctx context.Context, network, port string, ips []netip.Addr, trusted bool) (net.Conn, error) {
	var errs []error
	for _, ip := range ips {
		ip = ip.Unmap() // the system resolver may answer IPv4 in its mapped form
		dialCtx := ctx
		if trusted {
			dialCtx = context.WithValue(ctx, approvedKey{}, ip.WithZone(""))
		}
		conn, err := g.dial(dialCtx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// NewClient returns the HTTP client for webhook deliveries: every connection
// goes through g, environment proxies are ignored (they would connect on the
// guard's behalf), redirects are returned rather than followed, and timeout
// bounds each attempt, body included.
func NewClient(g *Guard, timeout time.Duration) *http.Client {
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            g.DialContext,
		ForceAttemptHTTP2:      true, // a custom DialContext turns it off otherwise
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConns:           100,
		MaxIdleConnsPerHost:    4,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
		Timeout: timeout,
	}
}

// maxURLLength is the longest webhook URL accepted.
const maxURLLength = 2048

// ValidateURL checks a webhook URL when it is submitted: an absolute http or
// https URL with a host, no credentials, no fragment and at most 2048
// characters. An IP-literal host is checked against p; a host name is
// checked when a delivery connects, as its addresses may change. The errors
// are sentences for the client.
func ValidateURL(raw string, p Policy) (*url.URL, error) {
	if len(raw) > maxURLLength {
		return nil, fmt.Errorf("the webhook URL is longer than %d characters", maxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("the webhook URL cannot be parsed")
	}
	if !u.IsAbs() || u.Opaque != "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, errors.New("the webhook URL must be an absolute http or https URL")
	}
	if u.User != nil {
		return nil, errors.New("the webhook URL must not contain credentials (user:password@)")
	}
	if strings.Contains(raw, "#") {
		return nil, errors.New("the webhook URL must not contain a fragment (#...)")
	}
	if err := validateHost(u, p); err != nil {
		return nil, err
	}
	return u, nil
}

// validateHost checks the host and port of a webhook URL.
func validateHost(u *url.URL, p Policy) error {
	host := u.Hostname()
	if host == "" {
		return errors.New("the webhook URL has no host")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return errors.New("the webhook URL's port must be between 1 and 65535")
		}
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if endsInNumber(host) {
			return errors.New("numeric host names are not accepted, use a dotted IPv4 address")
		}
		return nil
	}
	var blocked *BlockedError
	if err := p.Check(ip); errors.As(err, &blocked) {
		return fmt.Errorf("the webhook URL's address %s is %s address, which webhooks may not be sent to", host, withArticle(blocked.Reason))
	}
	return nil
}

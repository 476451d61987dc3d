package events

import (
	"context"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-gw/switchboard/internal/testsvc"
)

// matchCases are checked against Match and, in TestMatchAgreesWithRabbitMQ,
// against a real topic exchange.
var matchCases = []struct {
	pattern, key string
	want         bool
}{
	{"a", "a", true},
	{"a", "b", false},
	{"a", "a.b", false},
	{"a.b", "a", false},
	{"a.b", "a.b", true},
	{"*", "a", true},
	{"*", "", false},
	{"*", "a.b", false},
	{"*.*", "a.b", true},
	{"*.*", "a", false},
	{"a.*", "a.b", true},
	{"a.*", "a", false},
	{"a.*", "a.b.c", false},
	{"*.b", "a.b", true},
	{"*.b", "b", false},
	{"#", "", true},
	{"#", "a", true},
	{"#", "a.b.c", true},
	{"#.#", "", true},
	{"#.#", "a", true},
	{"#.#", "a.b.c", true},
	{"a.#", "a", true},
	{"a.#", "a.b", true},
	{"a.#", "a.b.c", true},
	{"a.#", "b.a", false},
	{"a.#", "", false},
	{"#.a", "a", true},
	{"#.a", "x.y.a", true},
	{"#.a", "a.x", false},
	{"a.#.b", "a.b", true},
	{"a.#.b", "a.x.b", true},
	{"a.#.b", "a.x.y.b", true},
	{"a.#.b", "a.b.b", true},
	{"a.#.b", "a.b.c", false},
	{"a.#.b", "a", false},
	{"#.b.#", "b", true},
	{"#.b.#", "a.b.c", true},
	{"#.b.#", "a.c", false},
	{"*.#", "", false},
	{"*.#", "a", true},
	{"*.#", "a.b.c", true},
	{"#.*", "", false},
	{"#.*", "a", true},
	{"#.*.#", "a.b", true},
	{"*.#.*", "a", false},
	{"*.#.*", "a.b", true},
	{"*.#.*", "a.b.c.d", true},
	{"a.#.#.b", "a.b", true},
	{"a.#.c.#.e", "a.c.e", true},
	{"a.#.c.#.e", "a.b.c.d.e", true},
	{"a.#.c.#.e", "a.b.d.e", false},
	{"a.#.b.#.b", "a.b.b", true},
	{"a.#.b.#.b", "a.b", false},
	{"progress.#", "progress.workflow.create", true},
	{"request.cancelled.workflow.#", "request.cancelled.workflow.create", true},
	{"request.cancelled.workflow.#", "request.cancelled.orion.create", false},
	// Empty words, which a routing key may have.
	{"a.*", "a.", true},
	{"*.a", ".a", true},
	{"#", "..", true},
	{"*.*", ".", true},
	{"a.#", "a.", true},
	// A wildcard inside a word is a literal to the broker; ValidPattern
	// refuses such patterns, but Match must still agree with RabbitMQ.
	{"a*", "a*", true},
	{"a*", "ab", false},
	{"", "", true},
	{"", "a", false},
	// Matching is exact bytes: no case folding.
	{"A.b", "a.b", false},
}

func TestMatch(t *testing.T) {
	t.Parallel()
	for _, c := range matchCases {
		require.Equal(t, c.want, Match(c.pattern, c.key), "Match(%q, %q)", c.pattern, c.key)
	}
}

// TestMatchAgreesWithRabbitMQ binds every pattern of matchCases to a topic
// exchange of a real broker, publishes every key, and checks Match against
// what the broker routed: the reference implementation is the broker.
func TestMatchAgreesWithRabbitMQ(t *testing.T) {
	t.Parallel()
	url := testsvc.AMQPURL(t)
	names := testsvc.BrokerNames(t)
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(names.EventsExchange, "topic", false, true, false, false, nil))

	patterns, keys := map[string]bool{}, map[string]bool{}
	for _, c := range matchCases {
		patterns[c.pattern], keys[c.key] = true, true
	}
	queues := map[string]string{} // pattern → its exclusive queue
	for p := range patterns {
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		require.NoError(t, err)
		require.NoError(t, ch.QueueBind(q.Name, p, names.EventsExchange, false, nil))
		queues[p] = q.Name
	}

	// Confirmed publishes are enqueued everywhere they route, so the gets
	// below see every one of them.
	require.NoError(t, ch.Confirm(false))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var confirms []*amqp.DeferredConfirmation
	for k := range keys {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, names.EventsExchange, k, false, false, amqp.Publishing{Body: []byte(k)})
		require.NoError(t, err)
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		require.NoError(t, err)
		require.True(t, ok)
	}

	for p, q := range queues {
		routed := map[string]bool{}
		for {
			d, ok, err := ch.Get(q, true)
			require.NoError(t, err)
			if !ok {
				break
			}
			routed[string(d.Body)] = true
		}
		for k := range keys {
			require.Equal(t, routed[k], Match(p, k), "pattern %q, key %q: the broker routed it: %v", p, k, routed[k])
		}
	}
}

func TestValidPattern(t *testing.T) {
	t.Parallel()
	valid := []string{"a", "#", "*", "#.#", "a.#", "a.*.b", "progress.#", "workflow-create_1.x",
		strings.Repeat("a", 255), strings.Repeat("a.", 127) + "a", "*.*.*", "é.ü"}
	for _, p := range valid {
		require.NoError(t, ValidPattern(p), "%q", p)
	}
	invalid := []string{"", ".", "a.", ".a", "a..b", "a*", "*a", "a#", "#a", "a.b*c", "**", "##",
		strings.Repeat("a", 256), strings.Repeat("a.", 128)}
	for _, p := range invalid {
		err := ValidPattern(p)
		require.ErrorIs(t, err, ErrInvalidPattern, "%q", p)
	}
}

func BenchmarkMatch(b *testing.B) {
	p, k := splitWords("#.b.#.d.*"), splitWords(strings.Repeat("x.", 20)+"b.c.d.e")
	for b.Loop() {
		if !matchWords(p, k) {
			b.Fatal("no match")
		}
	}
}

// TestMatchAgreesWithDefinition checks Match against a direct recursive
// reading of the topic rules over every pattern and key of up to four words
// from a small alphabet.
func TestMatchAgreesWithDefinition(t *testing.T) {
	t.Parallel()
	var reference func(p, k []string) bool
	reference = func(p, k []string) bool {
		switch {
		case len(p) == 0:
			return len(k) == 0
		case p[0] == "#":
			return reference(p[1:], k) || (len(k) > 0 && reference(p, k[1:]))
		case len(k) == 0:
			return false
		default:
			return (p[0] == "*" || p[0] == k[0]) && reference(p[1:], k[1:])
		}
	}
	all := func(alphabet []string) [][]string {
		out := [][]string{nil}
		prev := [][]string{nil}
		for range 4 {
			var next [][]string
			for _, s := range prev {
				for _, w := range alphabet {
					next = append(next, append(append([]string(nil), s...), w))
				}
			}
			out, prev = append(out, next...), next
		}
		return out
	}
	for _, p := range all([]string{"a", "b", "*", "#"}) {
		for _, k := range all([]string{"a", "b", ""}) {
			pattern, key := strings.Join(p, "."), strings.Join(k, ".")
			if key == "" && len(k) == 1 {
				continue // the key "" has no words, not one empty word
			}
			require.Equal(t, reference(splitWords(pattern), splitWords(key)), Match(pattern, key), "Match(%q, %q)", pattern, key)
		}
	}
}

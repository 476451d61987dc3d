package gateway

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// settlements keeps what a channel would tell the broker, with the
// broker's rules: a tag is settled once, and settling a tag that is not
// outstanding is the error that closes a real channel.
type settlements struct {
	mu          sync.Mutex
	outstanding map[uint64]bool
	how         map[uint64]string // ack, nack, reject
	frames      int
	errs        []string
}

func newSettlements(n uint64) *settlements {
	s := &settlements{outstanding: map[uint64]bool{}, how: map[uint64]string{}}
	for t := uint64(1); t <= n; t++ {
		s.outstanding[t] = true
	}
	return s
}

func (s *settlements) settle(kind string, tag uint64, multiple bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames++
	if !s.outstanding[tag] {
		s.errs = append(s.errs, fmt.Sprintf("%s of tag %d, which is not outstanding", kind, tag))
		return nil
	}
	for t := range s.outstanding {
		if t == tag || (multiple && t < tag) {
			delete(s.outstanding, t)
			s.how[t] = kind
		}
	}
	return nil
}

func (s *settlements) Ack(tag uint64, multiple bool) error { return s.settle("ack", tag, multiple) }
func (s *settlements) Nack(tag uint64, multiple, _ bool) error {
	return s.settle("nack", tag, multiple)
}
func (s *settlements) Reject(tag uint64, _ bool) error { return s.settle("reject", tag, false) }

func (s *settlements) snapshot() (outstanding int, how map[uint64]string, frames int, errs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := make(map[uint64]string, len(s.how))
	for k, v := range s.how {
		h[k] = v
	}
	return len(s.outstanding), h, s.frames, append([]string(nil), s.errs...)
}

// ackRange acks tags from to to, as handlers would.
func ackRange(t *testing.T, a *ackBatcher, from, to uint64) {
	t.Helper()
	for tag := from; tag <= to; tag++ {
		require.NoError(t, a.Ack(tag, false))
	}
}

// waitOutstanding waits until n deliveries are left unsettled at the broker.
func waitOutstanding(t *testing.T, ch *settlements, n int) {
	t.Helper()
	require.Eventually(t, func() bool { left, _, _, _ := ch.snapshot(); return left == n }, 2*time.Second, time.Millisecond)
}

// Acks made together go out as a few multiple acks, each tag settled once.
func TestAcksAreCoalesced(t *testing.T) {
	t.Parallel()
	ch := newSettlements(200)
	a := newAckBatcher(ch)
	ackRange(t, a, 1, 200)
	waitOutstanding(t, ch, 0)
	a.close()
	_, how, frames, errs := ch.snapshot()
	require.Empty(t, errs)
	require.Len(t, how, 200)
	require.Less(t, frames, 200, "acks were not coalesced")
}

// A delivery still in hand does not hold back the acks behind it for
// long: they go out one by one, and its own ack later settles only it.
func TestAcksBehindAGapGoOut(t *testing.T) {
	t.Parallel()
	ch := newSettlements(5)
	a := newAckBatcher(ch)
	ackRange(t, a, 2, 5)
	waitOutstanding(t, ch, 1)
	n, how, _, _ := ch.snapshot()
	require.Equal(t, 1, n)
	require.NotContains(t, how, uint64(1), "the delivery in hand was acked")

	require.NoError(t, a.Ack(1, false))
	a.close()
	n, how, _, errs := ch.snapshot()
	require.Empty(t, errs)
	require.Zero(t, n)
	require.Equal(t, "ack", how[1])
}

// A reject goes out at once, after the acks held before it, and is never
// covered by a later multiple ack.
func TestRejectIsNotCoveredByAnAck(t *testing.T) {
	t.Parallel()
	ch := newSettlements(3)
	a := newAckBatcher(ch)
	require.NoError(t, a.Ack(1, false))
	require.NoError(t, a.Reject(2, false))
	_, how, _, _ := ch.snapshot()
	require.Equal(t, "reject", how[2], "the reject waited")
	require.Equal(t, "ack", how[1], "the held ack did not go out before the reject")
	require.NoError(t, a.Ack(3, false))
	a.close()
	n, how, _, errs := ch.snapshot()
	require.Empty(t, errs)
	require.Zero(t, n)
	require.Equal(t, map[uint64]string{1: "ack", 2: "reject", 3: "ack"}, how)
}

// Handlers finishing in any order, some rejecting or nacking: every
// delivery is settled exactly once, the way its handler said.
func TestAcksFromConcurrentHandlers(t *testing.T) {
	t.Parallel()
	const n = 5000
	ch := newSettlements(n)
	a := newAckBatcher(ch)
	want := map[uint64]string{}
	tags := make(chan uint64, n)
	for tag := uint64(1); tag <= n; tag++ {
		kind := "ack"
		switch rand.IntN(50) {
		case 0:
			kind = "reject"
		case 1:
			kind = "nack"
		}
		want[tag] = kind
		tags <- tag
	}
	close(tags)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tag := range tags {
				if rand.IntN(10) == 0 {
					time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
				}
				var err error
				switch want[tag] {
				case "ack":
					err = a.Ack(tag, false)
				case "reject":
					err = a.Reject(tag, false)
				case "nack":
					err = a.Nack(tag, false, true)
				}
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	a.close()
	left, how, frames, errs := ch.snapshot()
	require.Empty(t, errs)
	require.Zero(t, left)
	require.Equal(t, want, how)
	t.Logf("%d deliveries settled in %d frames", n, frames)
}

// After close, settlements go straight to the channel.
func TestAcksAfterCloseGoStraightThrough(t *testing.T) {
	t.Parallel()
	ch := newSettlements(2)
	a := newAckBatcher(ch)
	require.NoError(t, a.Ack(1, false))
	a.close()
	require.NoError(t, a.Ack(2, false))
	n, _, _, errs := ch.snapshot()
	require.Empty(t, errs)
	require.Zero(t, n)
}

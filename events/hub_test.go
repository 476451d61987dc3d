package events

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// received drains what is buffered for s without waiting.
func received(s *Subscription) []string {
	var keys []string
	for {
		select {
		case m, ok := <-s.Messages():
			if !ok {
				return keys
			}
			keys = append(keys, m.RoutingKey)
		default:
			return keys
		}
	}
}

func TestHubFansOutByPattern(t *testing.T) {
	t.Parallel()
	h := NewHub(10, 10)
	subscribe := func(p string) *Subscription {
		s, err := h.Subscribe(p)
		require.NoError(t, err)
		t.Cleanup(s.Close)
		return s
	}
	progress, create, all, none := subscribe("progress.#"), subscribe("*.workflow.create"), subscribe("#"), subscribe("nobody.*")
	for _, k := range []string{"progress.workflow.create", "reply.delivered.workflow.create", "progress.orion.scan", "request.cancelled"} {
		h.Publish(Message{RoutingKey: k, Body: []byte(`{}`)})
	}
	// Publish has handed everything over by the time it returns.
	require.Equal(t, []string{"progress.workflow.create", "progress.orion.scan"}, received(progress))
	require.Equal(t, []string{"progress.workflow.create"}, received(create))
	require.Equal(t, []string{"progress.workflow.create", "reply.delivered.workflow.create", "progress.orion.scan", "request.cancelled"}, received(all))
	require.Empty(t, received(none))
	require.Equal(t, 4, h.Count())
}

func TestHubDropsASlowSubscriber(t *testing.T) {
	t.Parallel()
	h := NewHub(10, 2)
	counts := make(chan int, 10)
	h.SetActivity(func(n int) { counts <- n })
	slow, err := h.Subscribe("#")
	require.NoError(t, err)
	fast, err := h.Subscribe("#")
	require.NoError(t, err)
	defer fast.Close()
	require.Equal(t, 1, <-counts)
	require.Equal(t, 2, <-counts)

	var got []string
	for i := range 5 {
		h.Publish(Message{RoutingKey: "k" + strconv.Itoa(i)})
		got = append(got, received(fast)...)
	}
	require.Equal(t, []string{"k0", "k1", "k2", "k3", "k4"}, got, "the fast subscriber misses nothing")

	// The slow one keeps what fitted, then sees its stream end, dropped.
	require.Equal(t, []string{"k0", "k1"}, received(slow))
	_, open := <-slow.Messages()
	require.False(t, open)
	require.True(t, slow.Dropped())
	require.False(t, fast.Dropped())
	require.Equal(t, 1, h.Count())
	require.Equal(t, uint64(1), h.DroppedTotal())
	select {
	case n := <-counts:
		require.Equal(t, 1, n, "the drop is reported to the activity callback")
	case <-time.After(5 * time.Second):
		t.Fatal("the drop was never reported")
	}

	slow.Close() // closing a dropped subscription is harmless
	require.Equal(t, 1, h.Count())
	require.Empty(t, counts, "closing a dropped subscription changes nothing")
}

func TestHubPublishNeverWaits(t *testing.T) {
	t.Parallel()
	h := NewHub(100, 1)
	for range 100 {
		_, err := h.Subscribe("#") // never read
		require.NoError(t, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10_000 {
			h.Publish(Message{RoutingKey: "a.b"})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish waited for subscribers that never read")
	}
	require.Zero(t, h.Count(), "every subscriber that could not keep up was dropped")
	require.Equal(t, uint64(100), h.DroppedTotal())
}

func TestHubLimitsSubscribers(t *testing.T) {
	t.Parallel()
	h := NewHub(2, 1)
	a, err := h.Subscribe("a.#")
	require.NoError(t, err)
	_, err = h.Subscribe("b.#")
	require.NoError(t, err)
	_, err = h.Subscribe("c.#")
	require.ErrorIs(t, err, ErrTooManySubscribers)

	_, err = h.Subscribe("a.*b")
	require.ErrorIs(t, err, ErrInvalidPattern, "a bad pattern is refused before the limit is looked at")

	a.Close()
	a.Close() // idempotent
	_, open := <-a.Messages()
	require.False(t, open)
	require.False(t, a.Dropped())
	_, err = h.Subscribe("c.#")
	require.NoError(t, err, "a closed subscription frees its place")
}

func TestHubActivityInOrder(t *testing.T) {
	t.Parallel()
	h := NewHub(10, 1)
	var mu sync.Mutex
	var counts []int
	h.SetActivity(func(n int) {
		mu.Lock()
		counts = append(counts, n)
		mu.Unlock()
	})
	a, err := h.Subscribe("#")
	require.NoError(t, err)
	b, err := h.Subscribe("#")
	require.NoError(t, err)
	a.Close()
	b.Close()
	b.Close()
	_, err = h.Subscribe("#.#")
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []int{1, 2, 1, 0, 1}, counts, "each change is reported before the call that made it returns")
}

func TestNewHubRefusesNoRoom(t *testing.T) {
	t.Parallel()
	require.Panics(t, func() { NewHub(0, 1) })
	require.Panics(t, func() { NewHub(1, 0) })
}

// TestHubConcurrent runs subscribers that come, read and go (some too slow
// on purpose) against concurrent publishers, under -race. The activity
// callback must see the count move one step at a time, from 1, and end at 0.
func TestHubConcurrent(t *testing.T) {
	t.Parallel()
	h := NewHub(1000, 16)
	var mu sync.Mutex
	var counts []int
	h.SetActivity(func(n int) {
		mu.Lock()
		counts = append(counts, n)
		mu.Unlock()
	})

	stop := make(chan struct{})
	var publishers sync.WaitGroup
	for p := range 4 {
		publishers.Add(1)
		go func() {
			defer publishers.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				h.Publish(Message{RoutingKey: []string{"progress.a", "progress.b.c", "reply.a"}[(i+p)%3], Body: []byte(`{}`)})
				if i%8 == 0 {
					time.Sleep(50 * time.Microsecond) // so that readers keep up often enough to close, not only be dropped
				}
			}
		}()
	}

	var subscribers sync.WaitGroup
	for i := range 64 {
		subscribers.Add(1)
		go func() {
			defer subscribers.Done()
			for range 20 {
				s, err := h.Subscribe([]string{"#", "progress.#", "*.a", "reply.a"}[i%4])
				if !assert.NoError(t, err) { // not require: this is not the test's goroutine
					return
				}
				for range 10 {
					if _, ok := <-s.Messages(); !ok {
						assert.True(t, s.Dropped(), "a stream only ends early when dropped")
						break
					}
					if i%8 == 0 {
						time.Sleep(time.Millisecond) // too slow: likely dropped
					}
				}
				s.Close()
			}
		}()
	}
	subscribers.Wait()
	close(stop)
	publishers.Wait()

	require.Zero(t, h.Count())
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(counts) == 64*20*2 // one report per subscribe, and one per close or drop
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, counts[0])
	for i := 1; i < len(counts); i++ {
		require.InDelta(t, counts[i-1], counts[i], 1, "step %d: %v", i, counts[max(0, i-5):i+1])
		require.NotEqual(t, counts[i-1], counts[i])
	}
	require.Zero(t, counts[len(counts)-1])
	t.Logf("%d subscribers dropped", h.DroppedTotal())
}

//go:build faults

package faults

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// dbRecord is a request row as Postgres has it.
type dbRecord struct {
	status     string
	replyMsgID string
	hasReply   bool
	published  bool // published_at is set: the gateway recorded a confirm
	// relayed: the confirm was recorded after the PublishAfter grace: the
	// request was published by an outbox relay, after its submitter failed
	// to record the confirm (it died, or the confirm never came).
	relayed bool
}

// snapshot reads every request and dead letter of the scenario database.
func (w *world) snapshot(ctx context.Context) (map[string]dbRecord, map[string]int, int, error) {
	rows, err := w.pool().Query(ctx, `
		SELECT id::text, status, coalesce(reply_message_id, ''), replied_at IS NOT NULL, published_at IS NOT NULL,
		       coalesce(published_at >= created_at + $1::interval, false)
		FROM requests`, fmt.Sprintf("%d milliseconds", (2*confirmTimeout).Milliseconds()))
	if err != nil {
		return nil, nil, 0, err
	}
	recs := map[string]dbRecord{}
	for rows.Next() {
		var id string
		var r dbRecord
		if err := rows.Scan(&id, &r.status, &r.replyMsgID, &r.hasReply, &r.published, &r.relayed); err != nil {
			rows.Close()
			return nil, nil, 0, err
		}
		recs[id] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, 0, err
	}
	dl := map[string]int{}
	total := 0
	rows, err = w.pool().Query(ctx, `SELECT coalesce(correlation_id, ''), count(*) FROM dead_letters GROUP BY 1`)
	if err != nil {
		return nil, nil, 0, err
	}
	for rows.Next() {
		var corr string
		var n int
		if err := rows.Scan(&corr, &n); err != nil {
			rows.Close()
			return nil, nil, 0, err
		}
		dl[corr] = n
		total += n
	}
	rows.Close()
	return recs, dl, total, rows.Err()
}

// expectation says what final status a request must reach; "" means any
// terminal status.
type expectation func(r *clientRequest) string

func expectReplied(*clientRequest) string { return "replied" }

// settle waits, until timeout, for the system to come to rest after the
// faults: every client loop ended, every record terminal, every reply a
// responder sent accounted for, and the reply and dead-letter queues
// drained.
func (w *world) settle(l *load, amqpURL string, counters []sendCounter, timeout time.Duration) {
	w.t.Helper()
	l.wait()
	w.step("client loops ended")
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		recs, dl, _, err := w.snapshot(ctx)
		cancel()
		if err == nil && settled(recs, dl, counters) &&
			w.queueDepth(amqpURL, w.names.ReplyQueue) == 0 && w.queueDepth(amqpURL, w.names.DeadLetterQueue) == 0 {
			w.step("settled")
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	w.t.Logf("the system did not settle within %s; checking as it is", timeout)
}

func settled(recs map[string]dbRecord, dl map[string]int, counters []sendCounter) bool {
	for _, r := range recs {
		if !terminal(r.status) {
			return false
		}
	}
	for _, c := range counters {
		for id := range c.Sent() {
			if r, ok := recs[id]; !(ok && r.hasReply) && dl[id] == 0 {
				return false
			}
		}
	}
	return true
}

// summary is what a scenario prints.
type summary struct {
	sent, accepted, records, replied, duplicates, deadLettered, lost int
	relayed                                                          int // confirms recorded by a relay
}

// verify checks the invariant against Postgres, prints the scenario's
// summary line and fails the test on any violation or loss:
//   - every request that got a 2xx has its record, and the record is
//     terminal (after recovery: the status expect says);
//   - every reply a responder sent (by correlation id) is stored in its
//     request or kept in dead_letters;
//   - nothing a client was told contradicts the database: a 2xx for an id
//     without a record, a terminal status other than the final one, a
//     status that went backwards, a reply other than the stored one;
//   - no record holds a reply nobody sent, or exists without a client.
func (w *world) verify(l *load, counters []sendCounter, expect expectation) summary {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, dl, dlTotal, err := w.snapshot(ctx)
	if err != nil {
		w.t.Fatalf("read the database for the checks: %v", err)
	}
	var violations, losses []string
	s := summary{records: len(recs), deadLettered: dlTotal}
	statuses := map[string]int{}
	for _, r := range recs {
		statuses[r.status]++
	}
	s.replied = statuses["replied"]

	posted := map[string]bool{}
	attempts, unacknowledged, stale := 0, 0, 0
	for _, r := range l.requests() {
		r.mu.Lock()
		posted[r.id] = true
		s.sent++
		attempts += r.attempts
		rec, exists := recs[r.id]
		if !r.accepted {
			if len(r.codes) > 0 && r.codes[len(r.codes)-1] != 0 && r.codes[len(r.codes)-1] < 500 {
				violations = append(violations, fmt.Sprintf("%s: POST refused with %d (%s)", r.id, r.codes[len(r.codes)-1], r.lastProblem))
			}
			if exists {
				unacknowledged++ // committed, but the client never heard: allowed
			}
			r.mu.Unlock()
			continue
		}
		s.accepted++
		switch {
		case !exists:
			losses = append(losses, fmt.Sprintf("%s: got a 2xx but has no record", r.id))
		case !terminal(rec.status):
			losses = append(losses, fmt.Sprintf("%s: got a 2xx but is still %s after recovery", r.id, rec.status))
		default:
			if want := expect(r); want != "" && rec.status != want {
				violations = append(violations, fmt.Sprintf("%s (%s): ended %s, want %s", r.id, r.path, rec.status, want))
			}
		}
		violations = append(violations, contradictions(r, rec, exists)...)
		if exists && r.postStatus == "pending" && rec.hasReply && !rec.published {
			// The gateway had the confirm, but recording it found the reply
			// already stored: the 2xx said pending while the record said
			// replied (stale, though not a regression).
			stale++
		}
		r.mu.Unlock()
	}
	for id, rec := range recs {
		if !posted[id] {
			violations = append(violations, fmt.Sprintf("%s: a record (%s) no client sent", id, rec.status))
		}
	}

	// Replies by correlation id, over every responder.
	sentTo := map[string]int{}
	for _, c := range counters {
		for id, n := range c.Sent() {
			// The gateway keeps ids Postgres cannot hold as text with
			// U+FFFD in place of invalid UTF-8 and NUL; compare the same way.
			sentTo[asStored(id)] += n
		}
	}
	sends, accountedSends, storedFromSends, dlFromSends := 0, 0, 0, 0
	for id, n := range sentTo {
		sends += n
		rec, ok := recs[id]
		stored := ok && rec.hasReply
		if !stored && dl[id] == 0 {
			losses = append(losses, fmt.Sprintf("reply to %q: sent %d time(s), neither stored nor dead-lettered (record: %v %s)", id, n, ok, rec.status))
			continue
		}
		accountedSends += n
		if stored {
			storedFromSends++
		}
		dlFromSends += dl[id]
	}
	for id, rec := range recs {
		if rec.hasReply && sentTo[id] == 0 {
			violations = append(violations, fmt.Sprintf("%s: holds a reply (%s) no responder sent", id, rec.replyMsgID))
		}
	}
	// What was sent to an accounted id and is neither its stored reply nor
	// one of its dead letters was absorbed as a duplicate.
	s.duplicates = accountedSends - storedFromSends - dlFromSends
	if s.duplicates < 0 {
		violations = append(violations, fmt.Sprintf("more replies stored or dead-lettered (%d) than sent (%d)", storedFromSends+dlFromSends, accountedSends))
	}
	s.lost = len(losses)

	line := fmt.Sprintf("faults: scenario=%s sent=%d accepted_2xx=%d records=%d replied=%d duplicates_absorbed=%d dead_lettered=%d lost=%d",
		w.name, s.sent, s.accepted, s.records, s.replied, s.duplicates, s.deadLettered, s.lost)
	fmt.Println(line)
	w.t.Log(line)
	notPublished := 0
	for _, r := range recs {
		if r.hasReply && !r.published {
			notPublished++
		}
		if r.relayed {
			s.relayed++
		}
	}
	w.t.Logf("details: statuses=%v post_attempts=%d committed_unacknowledged=%d replies_sent=%d replies_before_confirm_recorded=%d stale_post_answers=%d relayed_after_grace=%d",
		sortedCounts(statuses), attempts, unacknowledged, sends, notPublished, stale, s.relayed)
	violations = append(violations, w.eventsLost(recs)...)
	if len(losses) > 0 {
		w.t.Errorf("lost=%d:\n%s", len(losses), joinLines(losses, 20))
	}
	if len(losses) > 0 || len(violations) > 0 {
		out, err := w.rabbit.Ctl("list_queues", "name", "type", "messages_ready", "messages_unacknowledged", "consumers")
		w.t.Logf("broker queues (err %v):\n%s", err, out)
	}
	if len(violations) > 0 {
		w.t.Errorf("%d invariant violations:\n%s", len(violations), joinLines(violations, 20))
	}
	return s
}

// contradictions compares what a client was told about r with the final
// record.
func contradictions(r *clientRequest, rec dbRecord, exists bool) []string {
	var out []string
	rank := func(s string) int {
		switch s {
		case "queued":
			return 0
		case "pending":
			return 1
		}
		return 2
	}
	prev := ""
	for i, o := range r.obs {
		switch {
		case o.status == "404":
			out = append(out, fmt.Sprintf("%s: told 404 (%s #%d) after a 2xx", r.id, o.via, i))
			continue
		case !exists:
			out = append(out, fmt.Sprintf("%s: told %s (%s #%d) but there is no record", r.id, o.status, o.via, i))
			continue
		case terminal(o.status) && o.status != rec.status:
			out = append(out, fmt.Sprintf("%s: told %s (%s #%d) but the record is %s", r.id, o.status, o.via, i, rec.status))
		case o.replyMsgID != "" && o.replyMsgID != rec.replyMsgID:
			out = append(out, fmt.Sprintf("%s: told reply %s (%s #%d) but the record has %s", r.id, o.replyMsgID, o.via, i, rec.replyMsgID))
		}
		if prev != "" && (rank(o.status) < rank(prev) || (terminal(prev) && o.status != prev)) {
			out = append(out, fmt.Sprintf("%s: went back from %s to %s (%s #%d)", r.id, prev, o.status, o.via, i))
		}
		prev = o.status
	}
	return out
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return strings.Join(parts, ",")
}

// asStored is how the correlation store writes an id: invalid UTF-8 and NUL
// become U+FFFD.
func asStored(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// eventsLost checks the lifecycle events through the faults: once the event
// outbox has drained (every event published and confirmed), every record's
// history holds its request.accepted event and the event of its final
// status, consumed back from the broker. It waits up to a minute for the
// relays and the history consumers to catch up, then lists what is missing.
func (w *world) eventsLost(recs map[string]dbRecord) []string {
	w.t.Helper()
	deadline := time.Now().Add(time.Minute)
	var missing []string
	for {
		missing = missing[:0]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var outbox int
		err := w.pool().QueryRow(ctx, `SELECT count(*) FROM event_outbox`).Scan(&outbox)
		if err == nil && outbox > 0 {
			missing = append(missing, fmt.Sprintf("%d events still in the event outbox", outbox))
		}
		if err == nil {
			var rows pgx.Rows
			rows, err = w.pool().Query(ctx, `
				SELECT r.id::text, r.status,
				       EXISTS (SELECT 1 FROM request_events e WHERE e.request_id = r.id AND e.type = 'request.accepted'),
				       EXISTS (SELECT 1 FROM request_events e WHERE e.request_id = r.id AND e.type = 'request.' || r.status)
				FROM requests r WHERE r.status NOT IN ('queued', 'pending')`)
			if err == nil {
				var id, status string
				var accepted, ended bool
				_, err = pgx.ForEachRow(rows, []any{&id, &status, &accepted, &ended}, func() error {
					if !accepted {
						missing = append(missing, id+": no request.accepted event in its history")
					}
					if !ended {
						missing = append(missing, id+": no request."+status+" event in its history")
					}
					return nil
				})
			}
		}
		cancel()
		if err == nil && len(missing) == 0 {
			w.step("lifecycle events of %d records all published and stored", len(recs))
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return []string{"check lifecycle events: " + err.Error()}
			}
			return append([]string{"lifecycle events lost (after a minute):"}, missing...)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/switchboard-gw/switchboard/client"
)

// showRecord writes the record: for reading on a terminal, with how long
// the command waited when it did; otherwise as the API's JSON, one line.
func (c cliIO) showRecord(rec *client.Record, waited time.Duration) {
	if !c.tty {
		b, err := json.Marshal(rec)
		if err != nil {
			fmt.Fprintf(c.stderr, "switchboard: encode record: %v\n", err)
			return
		}
		c.jsonLine(b)
		return
	}
	created := time.UnixMilli(rec.Time)
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", rec.ID)
	fmt.Fprintf(tw, "status:\t%s\n", rec.Status)
	fmt.Fprintf(tw, "routing key:\t%s\n", rec.RoutingKey)
	fmt.Fprintf(tw, "created:\t%s\n", formatMillis(rec.Time))
	switch {
	case rec.PickedUpAt != nil:
		fmt.Fprintf(tw, "picked up:\t%s (%s after creation)\n", formatMillis(*rec.PickedUpAt),
			formatDuration(time.UnixMilli(*rec.PickedUpAt).Sub(created)))
	case rec.Stalled:
		fmt.Fprintf(tw, "picked up:\tnot yet: stalled, no responder has started on it\n")
	}
	switch {
	case rec.Reply != nil:
		fmt.Fprintf(tw, "replied:\t%s (%s after creation)\n", formatMillis(rec.Reply.Time),
			formatDuration(time.UnixMilli(rec.Reply.Time).Sub(created)))
	case rec.Terminal():
		fmt.Fprintf(tw, "deadline:\t%s\n", formatMillis(rec.ExpiresAt))
	default:
		fmt.Fprintf(tw, "deadline:\t%s (in %s)\n", formatMillis(rec.ExpiresAt),
			formatDuration(max(time.Until(time.UnixMilli(rec.ExpiresAt)), 0)))
	}
	if rec.ReplyTo != nil {
		fmt.Fprintf(tw, "reply to:\t%s%s\n", *rec.ReplyTo, deliveryState(rec.Delivery))
	}
	if waited > 0 {
		fmt.Fprintf(tw, "waited:\t%s\n", formatDuration(waited))
	}
	_ = tw.Flush()
	fmt.Fprintf(c.stdout, "request:\n%s\n", indentJSON(rec.Request))
	if rec.Reply != nil {
		label := "reply"
		if rec.Status == client.StatusFailed {
			label = "reply (an error)"
		}
		fmt.Fprintf(c.stdout, "%s:\n%s\n", label, indentJSON(rec.Reply.Body))
	}
	// A gather: every reply, each under the responder that sent it. (A
	// gateway from before scatter-gather sends no replies at all.)
	if rec.Replies != nil && (rec.RepliesExpected == nil || *rec.RepliesExpected > 1) {
		of := "all"
		if rec.RepliesExpected != nil {
			of = strconv.Itoa(*rec.RepliesExpected)
		}
		fmt.Fprintf(c.stdout, "replies: %d of %s\n", len(rec.Replies), of)
		for _, r := range rec.Replies {
			label := "from " + r.From
			if r.Status == "error" {
				label += " (an error)"
			}
			fmt.Fprintf(c.stdout, "%s:\n%s\n", label, indentJSON(r.Body))
		}
	}
}

// jsonLine writes a JSON document on one line.
func (c cliIO) jsonLine(doc []byte) {
	var b bytes.Buffer
	if json.Compact(&b, doc) != nil {
		b.Reset()
		b.Write(doc)
	}
	b.WriteByte('\n')
	_, _ = c.stdout.Write(b.Bytes())
}

// deliveryState says how the webhook delivery stands, when the record
// carries it.
func deliveryState(raw json.RawMessage) string {
	var d struct {
		State    string `json:"state"`
		Attempts int    `json:"attempts"`
	}
	if json.Unmarshal(raw, &d) != nil || d.State == "" {
		return ""
	}
	return fmt.Sprintf(" (webhook %s, %d attempts)", d.State, d.Attempts)
}

// indentJSON pretty-prints a JSON document, indented under its label.
func indentJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Indent(&b, raw, "  ", "  ") != nil {
		return "  " + string(raw)
	}
	return "  " + b.String()
}

func formatMillis(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05.000 UTC")
}

// formatDuration rounds d for reading: milliseconds under 10 s, seconds
// above.
func formatDuration(d time.Duration) string {
	if d >= 10*time.Second {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Millisecond).String()
}

// progressLine shows a request's events on a terminal: progress as a bar
// redrawn in place on the last line, other events as lines above it.
type progressLine struct {
	w        io.Writer
	drawn    bool
	fraction float64
	message  string
}

// barWidth is the bar's length in characters; maxMessage bounds the
// message beside it, so that the line does not wrap on a common terminal
// (a wrapped line cannot be redrawn in place).
const (
	barWidth   = 30
	maxMessage = 40
)

// event shows one event of the stream.
func (p *progressLine) event(ev client.Event) {
	var ce struct {
		Time time.Time       `json:"time"`
		Data json.RawMessage `json:"data"`
	}
	_ = json.Unmarshal(ev.Data, &ce)
	var data struct {
		State    string   `json:"state"`
		Progress *float64 `json:"progress"`
		Message  string   `json:"message"`
	}
	_ = json.Unmarshal(ce.Data, &data)
	if data.Progress != nil && !math.IsNaN(*data.Progress) {
		p.fraction, p.message = min(max(*data.Progress, 0), 1), data.Message
		p.draw()
		return
	}
	line := ev.Type
	if !ce.Time.IsZero() {
		line = ce.Time.UTC().Format("15:04:05.000") + "  " + line
	}
	if data.Message != "" {
		line += ": " + data.Message
	}
	p.println(line)
}

func (p *progressLine) draw() {
	n := int(math.Round(p.fraction * barWidth))
	msg := p.message
	if utf8.RuneCountInString(msg) > maxMessage {
		msg = string([]rune(msg)[:maxMessage-1]) + "…"
	}
	// \r returns to the line's start, ESC [K erases what is left of it.
	fmt.Fprintf(p.w, "\r[%s%s] %3.0f%%  %s\x1b[K", strings.Repeat("#", n), strings.Repeat("-", barWidth-n), p.fraction*100, msg)
	p.drawn = true
}

// println writes line above the bar.
func (p *progressLine) println(line string) {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	fmt.Fprintln(p.w, line)
	if p.drawn {
		p.draw()
	}
}

// end leaves the bar, if any, as it stands and moves below it.
func (p *progressLine) end() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

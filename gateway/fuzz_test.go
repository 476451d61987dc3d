package gateway

// Fuzz targets for reply decoding. `make test` runs the seeds (the f.Add
// calls and testdata/fuzz/<FuzzName>/) as ordinary tests; `make fuzz`
// explores beyond them.

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// fuzzMaxReply is the reply size limit in FuzzReplyFromDelivery: small, so
// the fuzzer reaches it.
const fuzzMaxReply = 512

func FuzzReplyFromDelivery(f *testing.F) {
	const (
		reqID = "61934db2-f9d7-47e2-be80-9706615aae06"  // the seed document's request
		repID = "62baf6697-20fe-4683-964a-b92779275291" // its reply's (malformed) Message ID
	)
	// correlation id, message id, body, header time, header status, timestamp (s)
	f.Add(reqID, repID, []byte(`{"result":"Everything is awesome"}`), int64(1553020348447), "", int64(0))
	f.Add(reqID, repID, []byte(`{result: 'Everything is awesome'}`), int64(1553020348447), "", int64(0))
	f.Add(reqID, "", []byte(`Citrine Rocks!`), int64(0), "", int64(1553020348))
	f.Add(reqID, "", []byte(`{"error":"boom"}`), int64(0), "error", int64(0))
	f.Add(reqID, "m", []byte(`{}`), int64(-1), "ERROR", int64(-1))
	f.Add(reqID, "m", []byte(`null`), int64(1)<<53, "Error", int64(0))
	f.Add(reqID, "m", []byte(`1`), int64(math.MaxInt64), "ok", int64(math.MinInt64))
	f.Add(reqID, "m", []byte(` [1, 2] `), int64(math.MinInt64), " error", int64(math.MaxInt64))
	f.Add("", "", []byte{}, int64(0), "", int64(0))
	f.Add("not-a-uuid", "\x00", []byte(nil), int64(0), "", int64(-62135596800)) // the zero time.Time
	f.Add(strings.ToUpper(reqID), "m", []byte("\"\xff\xfe\""), int64(5), "", int64(0))
	f.Add(reqID, "m", []byte("\xff\xfe not json \x00"), int64(5), "", int64(0))
	f.Add(reqID, "m", []byte(`"`+strings.Repeat("x", fuzzMaxReply-2)+`"`), int64(5), "", int64(0))
	f.Add(reqID, "m", []byte(`"`+strings.Repeat("x", fuzzMaxReply-1)+`"`), int64(5), "error", int64(0))
	f.Add(reqID, "m", bytes.Repeat([]byte{0xff}, fuzzMaxReply+1), int64(5), "", int64(0))

	f.Fuzz(func(t *testing.T, correlationID, messageID string, body []byte, timeHeader int64, status string, tsUnix int64) {
		d := amqp.Delivery{CorrelationId: correlationID, MessageId: messageID, Body: body, Headers: amqp.Table{},
			ContentType: "application/json", RoutingKey: "switchboard.replies"}
		if timeHeader != 0 {
			d.Headers["time"] = timeHeader
		}
		if status != "" {
			d.Headers["status"] = status
		}
		if tsUnix != 0 {
			d.Timestamp = time.Unix(tsUnix, 0)
		}

		before := time.Now().UnixMilli()
		in := replyFromDelivery(d, fuzzMaxReply)
		after := time.Now().UnixMilli()

		if !json.Valid(in.Body) {
			t.Fatalf("reply body %q is not JSON", in.Body)
		}
		valid := len(body) <= fuzzMaxReply && json.Valid(body)
		if wantFailed := !valid || strings.EqualFold(strings.TrimSpace(status), "error"); in.Failed != wantFailed {
			t.Fatalf("Failed %v, want %v (status %q, valid body %v)", in.Failed, wantFailed, status, valid)
		}
		if valid {
			if !bytes.Equal(in.Body, body) {
				t.Fatalf("a valid body %q was changed to %q", body, in.Body)
			}
		} else {
			var why map[string]any
			if err := json.Unmarshal(in.Body, &why); err != nil || why["error"] == nil || why["detail"] == nil {
				t.Fatalf("a refused body is replaced by %q, which does not say why", in.Body)
			}
			if len(body) > fuzzMaxReply {
				if why["error"] != "reply_too_large" || why["raw"] != nil {
					t.Fatalf("an oversized body is replaced by %q", in.Body)
				}
			} else if why["error"] != "invalid_reply" || (utf8.Valid(body) && why["raw"] != string(body)) {
				t.Fatalf("a body that is not JSON (%q) is replaced by %q", body, in.Body)
			}
		}

		if in.CorrelationID != correlationID {
			t.Fatalf("correlation id %q read as %q", correlationID, in.CorrelationID)
		}
		if in.MessageID == "" || (messageID != "" && in.MessageID != messageID) {
			t.Fatalf("message id %q read as %q", messageID, in.MessageID)
		}
		if in.Source != "amqp" {
			t.Fatalf("source %q", in.Source)
		}
		switch {
		case timeHeader > 0:
			if in.Time != timeHeader {
				t.Fatalf("time header %d read as %d", timeHeader, in.Time)
			}
		case !d.Timestamp.IsZero():
			if want := d.Timestamp.UnixMilli(); in.Time != want {
				t.Fatalf("timestamp %v read as %d, want %d", d.Timestamp, in.Time, want)
			}
		default:
			if in.Time < before || in.Time > after {
				t.Fatalf("no time given, but time %d is not now (%d..%d)", in.Time, before, after)
			}
		}
		if in.Headers["correlation_id"] != correlationID || in.Headers["message_id"] != messageID {
			t.Fatalf("headers kept %v", in.Headers)
		}
		if status != "" && in.Headers["header:status"] != status {
			t.Fatalf("status header kept as %v", in.Headers["header:status"])
		}
	})
}

func FuzzHeaderInt(f *testing.F) {
	// n goes in as every integer type, x as both float types, s as a string.
	f.Add(int64(1552959300136), 1552959300136.0, "1552959300136")
	f.Add(int64(0), 0.0, "0")
	f.Add(int64(-1), -1.5, "-1")
	f.Add(int64(1)<<53, float64(int64(1)<<53), "9007199254740992")
	f.Add(int64(math.MaxInt64), 9.2e18, "9223372036854775807")
	f.Add(int64(math.MinInt64), -9.2e18, "-9223372036854775808")
	f.Add(int64(1)<<32, 1e300, "9223372036854775808")
	f.Add(int64(255), math.Inf(1), " 42 ")
	f.Add(int64(65535), math.Inf(-1), "+5")
	f.Add(int64(4294967295), math.NaN(), "")
	f.Add(int64(-129), math.SmallestNonzeroFloat64, "abc")
	f.Add(int64(128), 0.999, "1.5")
	f.Add(int64(32768), math.Copysign(0, -1), "1e3")
	f.Add(int64(7), 7.0, "0x10")
	f.Add(int64(7), 7.0, "12abc")

	f.Fuzz(func(t *testing.T, n int64, x float64, s string) {
		ints := []struct {
			v    any
			want int64
		}{
			{n, n}, {int32(n), int64(int32(n))}, {int(n), int64(int(n))}, {int16(n), int64(int16(n))},
			{int8(n), int64(int8(n))}, {uint32(n), int64(uint32(n))}, {uint16(n), int64(uint16(n))},
			{uint8(n), int64(uint8(n))},
		}
		for _, c := range ints {
			if got, ok := headerInt(c.v); !ok || got != c.want {
				t.Fatalf("headerInt(%T(%v)) = %d, %v; want %d", c.v, c.v, got, ok, c.want)
			}
		}

		// Floats in the int64 range truncate; others must not panic.
		got, ok := headerInt(x)
		if !math.IsNaN(x) && x > math.MinInt64 && x < math.MaxInt64 && (!ok || got != int64(x)) {
			t.Fatalf("headerInt(float64 %v) = %d, %v; want %d", x, got, ok, int64(x))
		}
		x32 := float32(x)
		got, ok = headerInt(x32)
		if !math.IsNaN(float64(x32)) && x32 > math.MinInt64 && x32 < math.MaxInt64 && (!ok || got != int64(x32)) {
			t.Fatalf("headerInt(float32 %v) = %d, %v; want %d", x32, got, ok, int64(x32))
		}

		// A string that is a decimal integer reads as that integer.
		got, ok = headerInt(s)
		if want, err := strconv.ParseInt(s, 10, 64); err == nil && (!ok || got != want) {
			t.Fatalf("headerInt(%q) = %d, %v; want %d", s, got, ok, want)
		}
		if _, ok := headerInt(nil); ok {
			t.Fatalf("headerInt accepted nil")
		}
	})
}

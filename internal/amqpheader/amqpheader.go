// Package amqpheader reads AMQP header values as clients in any language
// send them, and carries the W3C trace context in them. It is shared by
// the gateway and the responder SDK.
package amqpheader

import (
	"math"
	"strconv"
	"strings"
)

// Int reads an integer header: any integer width, a whole float (as some
// clients encode numbers), or a decimal string. NaN, infinities, values out
// of the int64 range and strings with anything but the number are refused.
func Int(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case int:
		return int64(n), true
	case int16:
		return int64(n), true
	case int8:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint8:
		return int64(n), true
	case float64:
		return floatInt(n)
	case float32:
		return floatInt(float64(n))
	case string:
		t, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
		return t, err == nil
	}
	return 0, false
}

// floatInt truncates a float that fits in an int64; NaN, infinities and
// out-of-range values are refused rather than wrapped.
func floatInt(f float64) (int64, bool) {
	if math.IsNaN(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}

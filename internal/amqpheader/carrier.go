package amqpheader

import "sort"

// Carrier lets an OpenTelemetry propagator read and write the W3C trace
// context (headers traceparent and tracestate) in an AMQP header table: it
// is a propagation.TextMapCarrier. Values are read as strings, or as the
// byte arrays some clients send instead; Set writes strings (AMQP
// longstr), which every client reads. Set on a nil Carrier panics, as on a
// nil map: give it a table.
type Carrier map[string]any

// Get returns the header key as a string, or "" when it is absent or not text.
func (c Carrier) Get(key string) string {
	switch v := c[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

// Set sets header key to value.
func (c Carrier) Set(key, value string) { c[key] = value }

// Keys lists the header names, sorted.
func (c Carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

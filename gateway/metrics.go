package gateway

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the gateway's Prometheus instruments.
type Metrics struct {
	RequestsAccepted prometheus.Counter
	Publishes        *prometheus.CounterVec
	RelayPublishes   *prometheus.CounterVec
	ConfirmSeconds   prometheus.Histogram
	Replies          *prometheus.CounterVec
	ReplyLatency     prometheus.Histogram
	DeadLetters      *prometheus.CounterVec
	DeadLetterErrors prometheus.Counter
	Expired          prometheus.Counter
	Stalled          prometheus.Counter
	Reconnects       prometheus.Counter
	Purged           prometheus.Counter
	Receipts         *prometheus.CounterVec
	ReceiptErrors    prometheus.Counter
	Events           *prometheus.CounterVec
}

// NewMetrics creates the instruments and registers them with reg (nil: not
// registered, for tests and tools).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		RequestsAccepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_requests_accepted_total", Help: "Requests newly recorded in the correlation store."}),
		Publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_publishes_total", Help: "Request publishes by result (confirmed, returned, nacked, timeout, unavailable)."},
			[]string{"result"}),
		RelayPublishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_outbox_publishes_total", Help: "Publishes made by the outbox relay, by result."},
			[]string{"result"}),
		ConfirmSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "switchboard_publish_confirm_seconds", Help: "Time from publish to the broker's confirm or return.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		Replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_replies_total", Help: "Replies received, by source (amqp, http) and outcome (stored, duplicate, unknown, late, closed, error)."},
			[]string{"source", "outcome"}),
		ReplyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "switchboard_reply_latency_seconds",
			Help:    "Time from a request's publish (its creation, when the reply beat the confirm) to its reply being stored, by the database's clock.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_dead_letters_total", Help: "Replies kept as dead letters, by reason (unknown, late, closed)."},
			[]string{"reason"}),
		DeadLetterErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_dead_letter_store_errors_total", Help: "Dead-lettered messages Postgres refused to record, even as a minimal record; each stays on the dead-letter queue."}),
		Expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_requests_expired_total", Help: "Requests the sweeper closed at their deadline: expired, or a gather (Expect-Replies) ended partial, or replied for Expect-Replies: all."}),
		Stalled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_requests_stalled_total", Help: "Requests flagged stalled: published, still open, and not picked up by a responder (no request.received event) within SWITCHBOARD_STALL_AFTER."}),
		Reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_broker_reconnects_total", Help: "Broker reconnect attempts."}),
		Purged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_retention_purged_total", Help: "Terminal requests and dead letters removed after the retention period."}),
		Receipts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_reply_receipts_total", Help: "Replies first delivered to their client (reply.delivered events), by how (webhook, read)."},
			[]string{"via"}),
		ReceiptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_reply_receipt_errors_total", Help: "Reply receipts that could not be recorded (Postgres errors, retried; or dropped when the receipt queue was full)."}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_events_total",
			Help: "Events consumed from the events exchange, by outcome (stored, duplicate, unknown, over_limit, no_request, invalid, error)."},
			[]string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.RequestsAccepted, m.Publishes, m.RelayPublishes, m.ConfirmSeconds,
			m.Replies, m.ReplyLatency, m.DeadLetters, m.DeadLetterErrors, m.Expired, m.Stalled, m.Reconnects, m.Purged,
			m.Receipts, m.ReceiptErrors, m.Events)
	}
	return m
}

package gateway

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/switchboard-gw/switchboard/correlation"
)

// Reply receipts: the gateway publishes reply.delivered.<routing key> once
// per request, when the reply first reaches its client — a webhook receiver
// answered 2xx, or a GET, long-poll or Prefer: wait answered with it — so a
// responder can learn that its reply was received. Config.ReplyReceipts
// turns them off: then ReplyDelivered and ReplyRead do nothing.

// receiptQueue bounds the reads waiting to be recorded as receipts.
const receiptQueue = 4096

// ReplyDeliveredRoutingKey is the events-exchange routing key of the
// receipt of a request with routing key key.
func ReplyDeliveredRoutingKey(key string) string { return "reply.delivered." + key }

func (g *Gateway) receiptEvent(r correlation.Request, via string) correlation.Event {
	return requestEvent("reply.delivered", ReplyDeliveredRoutingKey(r.RoutingKey), r, via, time.Now())
}

// ReplyDelivered records, now, that the reply of request id reached its
// client by via, and announces it if it is the first time.
func (g *Gateway) ReplyDelivered(ctx context.Context, id uuid.UUID, via string) error {
	if !g.cfg.ReplyReceipts {
		return nil
	}
	n, err := g.store.MarkReplyDelivered(ctx, []correlation.Receipt{{ID: id, Via: via}}, g.receiptEvent)
	if err != nil {
		g.metrics.ReceiptErrors.Inc()
		return err
	}
	if n > 0 {
		g.metrics.Receipts.WithLabelValues(via).Add(float64(n))
		g.wakeEvents()
	}
	return nil
}

// ReplyRead queues the receipt of a reply a read has just answered with. It
// does not wait: the client has its answer, and receipts are recorded in
// batches. When the queue is full (Postgres is away or slow) the receipt is
// dropped and counted, never the read.
func (g *Gateway) ReplyRead(id uuid.UUID) {
	if !g.cfg.ReplyReceipts {
		return
	}
	select {
	case g.receipts <- id:
	default:
		g.metrics.ReceiptErrors.Inc()
		g.logger.Warn("reply receipt dropped: the receipt queue is full", "request_id", id)
	}
}

// runReceipts records queued read receipts in batches until ctx ends, then
// records what is still queued, bounded by a few seconds.
func (g *Gateway) runReceipts(ctx context.Context) {
	batch := make([]correlation.Receipt, 0, 256)
	flush := func(ctx context.Context) {
		backoff := 100 * time.Millisecond
		for len(batch) > 0 {
			n, err := g.store.MarkReplyDelivered(ctx, batch, g.receiptEvent)
			if err == nil {
				if n > 0 {
					g.metrics.Receipts.WithLabelValues("read").Add(float64(n))
					g.wakeEvents()
				}
				batch = batch[:0]
				return
			}
			g.metrics.ReceiptErrors.Inc()
			g.logger.Warn("record reply receipts; retrying", "error", err, "receipts", len(batch), "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				g.logger.Error("reply receipts not recorded at shutdown", "receipts", len(batch))
				batch = batch[:0]
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
	take := func(id uuid.UUID) {
		batch = append(batch, correlation.Receipt{ID: id, Via: "read"})
		for len(batch) < cap(batch) {
			select {
			case id := <-g.receipts:
				batch = append(batch, correlation.Receipt{ID: id, Via: "read"})
				continue
			default:
			}
			break
		}
	}
	for {
		select {
		case id := <-g.receipts:
			take(id)
			flush(ctx)
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			for {
				select {
				case id := <-g.receipts:
					take(id)
					flush(final)
				default:
					return
				}
			}
		}
	}
}

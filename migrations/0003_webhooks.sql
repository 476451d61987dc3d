-- Webhook delivery of outcomes (CONTRACT §4), owned by package webhook.
--
-- One delivery per request that has a Reply-To URL, created by a trigger in
-- the same transaction that ends the request, whichever path ends it (a
-- reply over AMQP or HTTP, the expiry sweeper, a cancel, a broker return)
-- and whichever gateway instance commits it. So a delivery exists exactly
-- when the outcome it announces has committed.
CREATE TABLE webhook_deliveries (
    request_id      uuid        PRIMARY KEY REFERENCES requests (id) ON DELETE CASCADE,
    url             text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    -- request.<status>; with event_at (when the request ended) it makes the
    -- payload the same bytes on every attempt.
    event_type      text        NOT NULL,
    event_at        timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    -- Attempts made before the latest manual retry: the retry schedule
    -- starts again from there.
    round_start     integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Set while an instance is attempting it; the attempt's outcome is
    -- recorded only under the same lease. A lease that outlives its
    -- attempt (the instance died) expires at next_attempt_at.
    lease           uuid,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz
);

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

-- Every attempt, for GET /v1/requests/{id}/deliveries.
CREATE TABLE webhook_attempts (
    request_id    uuid        NOT NULL REFERENCES webhook_deliveries (request_id) ON DELETE CASCADE,
    attempt       integer     NOT NULL,
    url           text        NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   double precision NOT NULL,
    http_status   integer,
    error         text,
    response_body text,
    outcome       text        NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    PRIMARY KEY (request_id, attempt)
);

CREATE FUNCTION switchboard_enqueue_webhook() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (request_id, url, event_type)
    VALUES (NEW.id, NEW.reply_to, 'request.' || NEW.status)
    ON CONFLICT (request_id) DO NOTHING;
    -- One notification per transaction however many rows it ends.
    PERFORM pg_notify('switchboard_webhooks', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER requests_enqueue_webhook
    AFTER UPDATE OF status ON requests
    FOR EACH ROW
    WHEN (NEW.reply_to IS NOT NULL
          AND OLD.status IN ('queued', 'pending')
          AND NEW.status NOT IN ('queued', 'pending'))
    EXECUTE FUNCTION switchboard_enqueue_webhook();

-- Reply receipts: when the reply was first handed to the client (a webhook
-- answered 2xx, or a read returned the replied record). reply.delivered is
-- published once, by whoever sets it.
ALTER TABLE requests ADD COLUMN reply_delivered_at timestamptz;

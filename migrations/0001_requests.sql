-- The correlation store: one row per request, its status and its reply.
-- Bodies are kept as the exact bytes received (bytea) so a republish sends
-- what the client sent and an idempotent repeat can be compared by digest.
CREATE TABLE requests (
    id                  uuid        PRIMARY KEY,
    routing_key         text        NOT NULL,
    status              text        NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'pending', 'replied', 'failed', 'expired', 'unroutable', 'cancelled')),
    time_ms             bigint      NOT NULL,
    expires_at          timestamptz NOT NULL,
    reply_to            text,
    body                bytea       NOT NULL,
    body_sha256         bytea       NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- Outbox bookkeeping: a queued row is (re)published by the relay once
    -- next_attempt_at has passed.
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    publish_attempts    integer     NOT NULL DEFAULT 0,
    published_at        timestamptz,
    last_error          text,
    -- The reply, once the first one has been stored.
    reply_message_id     text,
    reply_correlation_id text,
    reply_time_ms        bigint,
    reply_body           bytea,
    replied_at           timestamptz
);

-- The relay scans only queued rows; the sweeper only open ones.
CREATE INDEX requests_outbox_idx ON requests (next_attempt_at) WHERE status = 'queued';
CREATE INDEX requests_open_expiry_idx ON requests (expires_at) WHERE status IN ('queued', 'pending');

-- Replies that matched no open request: unknown correlation ids, replies that
-- came after the deadline or after the request was closed. Kept whole so an
-- operator can see and replay them; nothing is dropped silently.
CREATE TABLE dead_letters (
    id              bigserial   PRIMARY KEY,
    reason          text        NOT NULL,
    source          text        NOT NULL,
    correlation_id  text,
    message_id      text,
    headers         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    body            bytea       NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_letters_correlation_idx ON dead_letters (correlation_id);

-- Scatter-gather (issue 10, CONTRACT §8): a request may expect several
-- replies, one per responder.
--
-- replies_expected is 1 for an ordinary request (the first reply ends it, on
-- the group-committed path that never reads request_replies), 2..100 to
-- gather that many distinct replies, or -1 to gather every reply until the
-- deadline (Expect-Replies: all).
ALTER TABLE requests
    ADD COLUMN replies_expected integer NOT NULL DEFAULT 1
        CHECK (replies_expected = -1 OR replies_expected BETWEEN 1 AND 100),
    -- Who sent the first reply: the AMQP app_id, the Reply-From header of
    -- POST /v1/replies, or else the reply's message id.
    ADD COLUMN reply_from text;

-- partial: the deadline passed with at least one but fewer than the
-- expected replies. Terminal, like the other four.
ALTER TABLE requests DROP CONSTRAINT requests_status_check;
ALTER TABLE requests ADD CONSTRAINT requests_status_check
    CHECK (status IN ('queued', 'pending', 'replied', 'failed', 'expired', 'unroutable', 'cancelled', 'partial'));

-- Retention finds terminal requests by age; the index must cover partial.
CREATE INDEX requests_terminal_updated_2_idx ON requests (updated_at)
    WHERE status IN ('replied', 'failed', 'expired', 'unroutable', 'cancelled', 'partial');
DROP INDEX requests_terminal_updated_idx;

-- The replies a gathering request has collected, one per responder: a
-- redelivery (same responder) is absorbed by the unique key. Rows go with
-- their request when retention deletes it.
CREATE TABLE request_replies (
    request_id     uuid        NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    responder      text        NOT NULL,
    seq            integer     NOT NULL, -- 1 for the first reply, in arrival order
    message_id     text        NOT NULL,
    correlation_id text        NOT NULL,
    time_ms        bigint      NOT NULL,
    body           bytea       NOT NULL,
    failed         boolean     NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, responder),
    UNIQUE (request_id, seq)
);

-- Retention removes terminal requests by age; this index finds them without
-- scanning the open ones.
CREATE INDEX requests_terminal_updated_idx ON requests (updated_at)
    WHERE status IN ('replied', 'failed', 'expired', 'unroutable', 'cancelled');

CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);

-- Events the gateway must publish (e.g. request.cancelled for responders)
-- are written here in the same transaction as the change they announce and
-- published by the relay with confirms: an event is never announced for a
-- change that did not commit, and never lost when the broker is away.
CREATE TABLE event_outbox (
    id              bigserial   PRIMARY KEY,
    routing_key     text        NOT NULL,
    body            bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text
);

CREATE INDEX event_outbox_due_idx ON event_outbox (next_attempt_at);

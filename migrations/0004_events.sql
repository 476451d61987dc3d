-- Publish-subscribe (CONTRACT §5).

-- The history of each request's events, owned by package events: every
-- CloudEvent on the events exchange whose correlationid names a known
-- request, in the order the gateway stored them. seq is the SSE event id,
-- so Last-Event-ID resumption is exact.
CREATE TABLE request_events (
    seq         bigserial   PRIMARY KEY,
    request_id  uuid        NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    -- CloudEvents identify an event by source and id: a redelivered or
    -- republished event is stored once.
    source      text        NOT NULL,
    event_id    text        NOT NULL,
    type        text        NOT NULL,
    event       bytea       NOT NULL, -- the CloudEvent, structured-mode JSON
    stored_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (request_id, source, event_id)
);

CREATE INDEX request_events_request_idx ON request_events (request_id, seq);

-- The gateway's lifecycle events: request.accepted when a request is
-- recorded, request.<status> when it ends, as CloudEvents in the event
-- outbox, written by the same statement that makes the change, whichever
-- code path and instance runs it. The relay publishes them with confirms
-- to the events exchange, routing key request.<status>.<routing key>.
-- A session that sets switchboard.lifecycle_events to 'off' writes none
-- (SWITCHBOARD_LIFECYCLE_EVENTS=false).
CREATE FUNCTION switchboard_lifecycle_event(id uuid, routing_key text, status text, kind text)
RETURNS bytea LANGUAGE sql AS $$
    SELECT convert_to(jsonb_build_object(
        'specversion', '1.0',
        'id', gen_random_uuid()::text,
        'source', 'switchboard',
        'type', 'request.' || kind,
        'time', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'subject', id::text,
        'datacontenttype', 'application/json',
        'correlationid', id::text,
        'data', jsonb_build_object('id', id::text, 'routing_key', routing_key, 'status', status)
    )::text, 'UTF8')
$$;

CREATE FUNCTION switchboard_lifecycle_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('switchboard.lifecycle_events', true), '') = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO event_outbox (routing_key, body)
        SELECT 'request.accepted.' || n.routing_key,
               switchboard_lifecycle_event(n.id, n.routing_key, n.status, 'accepted')
        FROM new_rows n
        ORDER BY n.id;
    ELSE
        INSERT INTO event_outbox (routing_key, body)
        SELECT 'request.' || n.status || '.' || n.routing_key,
               switchboard_lifecycle_event(n.id, n.routing_key, n.status, n.status)
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.status IN ('queued', 'pending') AND n.status NOT IN ('queued', 'pending')
        ORDER BY n.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER requests_accepted_event
    AFTER INSERT ON requests
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION switchboard_lifecycle_events();

CREATE TRIGGER requests_ended_event
    AFTER UPDATE ON requests
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION switchboard_lifecycle_events();

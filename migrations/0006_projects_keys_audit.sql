-- Projects, API keys and the audit trail (issue 8), owned by package auth.

-- A project owns requests, their events, deliveries and dead letters. The
-- default project (the nil UUID) holds what was there before projects
-- existed, and its admins are the gateway's operators.
CREATE TABLE projects (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    -- Per-project limits; NULL: the gateway's defaults.
    rate_rps    double precision CHECK (rate_rps > 0),
    rate_burst  integer          CHECK (rate_burst > 0),
    max_waiters integer          CHECK (max_waiters > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO projects (id, name) VALUES ('00000000-0000-0000-0000-000000000000', 'default');

-- API keys: only a SHA-256 of the key is kept (the key is 256 random bits,
-- so a slow hash adds nothing); prefix is the key's first characters, for
-- people to tell keys apart.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    project_id   uuid        NOT NULL REFERENCES projects (id),
    name         text        NOT NULL,
    prefix       text        NOT NULL,
    hash         bytea       NOT NULL UNIQUE,
    scopes       jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

CREATE INDEX api_keys_project_idx ON api_keys (project_id);

-- The audit trail of user actions other than submits (a submit is its
-- request row: project, key and time are on it).
CREATE TABLE audit_log (
    id         bigserial   PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    project_id uuid        NOT NULL,
    key_id     uuid,
    action     text        NOT NULL,
    target     text        NOT NULL DEFAULT '',
    outcome    text        NOT NULL,
    detail     jsonb       NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX audit_log_project_idx ON audit_log (project_id, id DESC);

-- Secrets shared by every instance, made once (e.g. the key that signs
-- browser read tokens, so a token minted by one instance works on all).
CREATE TABLE gateway_secrets (
    name       text        PRIMARY KEY,
    secret     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every request belongs to a project, and remembers the key that submitted
-- it (NULL: submitted without a key, e.g. --insecure-no-auth, or by a rule).
ALTER TABLE requests
    ADD COLUMN project_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000' REFERENCES projects (id),
    ADD COLUMN key_id uuid;

CREATE INDEX requests_project_idx ON requests (project_id, id DESC);

-- A dead letter belongs to the project of the request it names; NULL when
-- it names none (an unknown correlation id): operators see those.
ALTER TABLE dead_letters ADD COLUMN project_id uuid;

-- Lifecycle events name their project (CloudEvents extension
-- switchboardproject), so topic subscriptions show each project its own.
CREATE FUNCTION switchboard_lifecycle_event(id uuid, project uuid, routing_key text, status text, kind text)
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
        'switchboardproject', project::text,
        'data', jsonb_build_object('id', id::text, 'routing_key', routing_key, 'status', status)
    )::text, 'UTF8')
$$;

CREATE OR REPLACE FUNCTION switchboard_lifecycle_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('switchboard.lifecycle_events', true), '') = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO event_outbox (routing_key, body)
        SELECT 'request.accepted.' || n.routing_key,
               switchboard_lifecycle_event(n.id, n.project_id, n.routing_key, n.status, 'accepted')
        FROM new_rows n
        ORDER BY n.id;
    ELSE
        INSERT INTO event_outbox (routing_key, body)
        SELECT 'request.' || n.status || '.' || n.routing_key,
               switchboard_lifecycle_event(n.id, n.project_id, n.routing_key, n.status, n.status)
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.status IN ('queued', 'pending') AND n.status NOT IN ('queued', 'pending')
        ORDER BY n.id;
    END IF;
    RETURN NULL;
END
$$;

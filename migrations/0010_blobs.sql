-- Claim check (issue 10, CONTRACT §8): bodies over the inline threshold are
-- kept as Postgres large objects, so every gateway instance can serve them,
-- they are written in the same database as the request they belong to, and
-- they share its retention.
--
-- body_claim marks a request whose body is a claim ({"claim": {...}}) and
-- not the client's content, so every publisher of it (the submitter, the
-- outbox relay) marks the AMQP message as a claim.
ALTER TABLE requests ADD COLUMN body_claim boolean NOT NULL DEFAULT false;

-- One row per stored body. The blob is committed before its request row
-- (the body is streamed first), so there is no foreign key: a blob whose
-- request never got recorded is an orphan, removed by the purge.
CREATE TABLE blobs (
    id           uuid        PRIMARY KEY,
    request_id   uuid        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('request', 'reply')),
    content      oid         NOT NULL,
    size         bigint      NOT NULL CHECK (size >= 0),
    sha256       bytea       NOT NULL,
    content_type text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX blobs_request_idx ON blobs (request_id);
CREATE INDEX blobs_created_idx ON blobs (created_at);

-- A deleted blob row takes its large object with it: nothing outside this
-- table refers to one, and lo_unlink is the only way a large object goes.
CREATE FUNCTION blobs_unlink() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lo_unlink(g.content) FROM gone g
    WHERE EXISTS (SELECT 1 FROM pg_largeobject_metadata m WHERE m.oid = g.content);
    RETURN NULL;
END $$;
CREATE TRIGGER blobs_unlink AFTER DELETE ON blobs
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION blobs_unlink();

-- A deleted request (the retention purge, or anything else) takes its
-- blobs with it.
CREATE FUNCTION requests_drop_blobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM blobs WHERE request_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER requests_drop_blobs AFTER DELETE ON requests
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION requests_drop_blobs();

-- Picked-up visibility (issue 10): when a responder started on a request
-- (its request.received event was stored), and when an open request was
-- flagged as waiting in a queue nobody reads.
ALTER TABLE requests
    ADD COLUMN picked_up_at timestamptz,
    ADD COLUMN stalled_at   timestamptz;

-- The stall sweep reads only published requests nobody has picked up.
CREATE INDEX requests_unclaimed_idx ON requests (published_at)
    WHERE status = 'pending' AND picked_up_at IS NULL AND stalled_at IS NULL;

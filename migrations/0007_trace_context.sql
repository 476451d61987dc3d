-- Trace context (issue 9): the W3C traceparent and tracestate of the span
-- that submitted a request, so its publish — which may happen later, from
-- the outbox relay on any instance — and its webhook deliveries continue
-- the submitter's trace. NULL: the request was submitted outside any trace.
-- Nullable without a default, so adding them rewrites no rows; no length
-- checks, so trace metadata can never fail a submit (the HTTP header limit
-- bounds them).
ALTER TABLE requests
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate  text;

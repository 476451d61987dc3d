-- Rule firings (package rules): one row per rule that met an event, whether
-- its condition held and its actions ran (matched, failed), its condition
-- could not be evaluated (condition_error) or the event was past the hop
-- limit (hop_limit). Rules that did not match leave nothing.
--
-- Read newest first per rule for GET /v1/rules/{name}/firings; retention is
-- bounded by PGFirings.Purge (by age and by a count kept per rule). The
-- failures themselves are also kept as dead letters, which outlive this
-- history.
CREATE TABLE rule_firings (
    id          bigserial   PRIMARY KEY,
    rule        text        NOT NULL,
    source      text        NOT NULL,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    -- The event as JSON, as the rule saw it.
    event       bytea       NOT NULL,
    outcome     text        NOT NULL
        CHECK (outcome IN ('matched', 'failed', 'condition_error', 'hop_limit')),
    error       text,
    -- [{kind, output_id, outcome, error, attempts}], one per action run.
    actions     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    fired_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX rule_firings_rule_idx ON rule_firings (rule, id DESC);
CREATE INDEX rule_firings_fired_idx ON rule_firings (fired_at);

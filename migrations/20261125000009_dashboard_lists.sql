-- Dashboard lists of opportunities and anomalies (issue #8): who dismissed an opportunity, the record of
-- one-click actions taken from the dashboard, and indexes for the lists' filters and sort orders so the
-- pages stay a LIMITed index scan on a large fleet.
ALTER TABLE opportunities ADD COLUMN dismissed_by text;

-- One row per one-click action: who, when, the command as the opportunity described it, and what came of it
-- (the decision recorded for a scale, the agent commands queued for a rebatch or probe).
CREATE TABLE opportunity_actions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    opportunity_id bigint NOT NULL REFERENCES opportunities (id),
    acted_at       timestamptz NOT NULL,
    acted_by       text NOT NULL,
    command        jsonb NOT NULL,
    ok             boolean NOT NULL,
    result         text NOT NULL,
    decision_id    bigint REFERENCES decisions (id),
    command_ids    uuid[] NOT NULL DEFAULT '{}'
);
CREATE INDEX opportunity_actions_latest ON opportunity_actions (opportunity_id, acted_at DESC);

CREATE INDEX opportunities_status_gpu_hours ON opportunities (status, gpu_hours_per_week DESC);
CREATE INDEX opportunities_status_first_seen ON opportunities (status, first_seen DESC);
CREATE INDEX opportunities_status_last_seen ON opportunities (status, last_seen DESC);
CREATE INDEX opportunities_deployment ON opportunities (deployment, expected_value DESC);
CREATE INDEX opportunities_node ON opportunities (node_id, expected_value DESC);

-- Anomalies of one node (its node and GPU pages, the node filter) and of one deployment, newest first; open
-- events of any age for the "ongoing" part of a time range.
CREATE INDEX anomalies_node_started_at ON anomalies (node_id, started_at DESC);
CREATE INDEX anomalies_deployment_started_at ON anomalies (deployment, started_at DESC);
CREATE INDEX anomalies_open_started_at ON anomalies (started_at DESC) WHERE ended_at IS NULL;
CREATE INDEX anomalies_ended_at ON anomalies (ended_at DESC) WHERE ended_at IS NOT NULL;

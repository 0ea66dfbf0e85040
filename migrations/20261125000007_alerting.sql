-- Alerting v2 (issue #7): per-condition alert instances with a pending -> firing -> resolved lifecycle,
-- incidents grouped by node / deployment (the `alerts` table now holds one row per group incident), user
-- rules, silences, webhook receivers, and per-receiver outbox rows.

-- Incidents: the rows of the v1 engine were one per condition. Close them here, queueing a resolve for each
-- so PagerDuty does not keep an incident the new engine will never resolve; the engine reopens what still
-- holds under its grouped keys.
INSERT INTO alert_deliveries (alert_id, action, dedup_key, payload)
SELECT id, 'resolve', dedup_key, jsonb_build_object('event_action', 'resolve', 'dedup_key', dedup_key)
FROM alerts WHERE state = 'firing';
UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE state = 'firing';

ALTER TABLE alerts ADD COLUMN last_notified_at timestamptz;
ALTER TABLE alerts ADD COLUMN notifications integer NOT NULL DEFAULT 0;
-- One open incident per group: two evaluators racing (a leadership change) cannot open a second one.
CREATE UNIQUE INDEX alerts_one_open_per_group ON alerts (group_name) WHERE state = 'firing';
CREATE INDEX alerts_started_at ON alerts (started_at DESC);

-- Deliveries go to one receiver each: `pagerduty` or `webhook:<name>`. Rows queued before this migration
-- were PagerDuty's.
ALTER TABLE alert_deliveries ADD COLUMN receiver text NOT NULL DEFAULT 'pagerduty';
ALTER TABLE alert_deliveries ADD COLUMN last_status integer;
CREATE INDEX alert_deliveries_key ON alert_deliveries (receiver, dedup_key, id)
    WHERE delivered_at IS NULL AND NOT failed_permanently;

-- One condition of one rule (a GPU, a node, a deployment) and where it is in its lifecycle.
CREATE TABLE alert_instances (
    id           bigserial PRIMARY KEY,
    fingerprint  text NOT NULL,
    rule         text NOT NULL,
    rule_id      uuid,
    severity     text NOT NULL,
    group_name   text NOT NULL,
    labels       jsonb NOT NULL,
    summary      text NOT NULL,
    details      jsonb NOT NULL,
    state        text NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    -- Why it does not page: `silenced by <id>` or `inhibited by <fingerprint>`; NULL when it does.
    suppressed   text,
    active_since timestamptz NOT NULL,
    fired_at     timestamptz,
    resolved_at  timestamptz,
    incident_id  bigint REFERENCES alerts (id)
);
CREATE UNIQUE INDEX alert_instances_one_active ON alert_instances (fingerprint) WHERE state IN ('pending', 'firing');
CREATE INDEX alert_instances_group ON alert_instances (group_name) WHERE state IN ('pending', 'firing');

-- User rules: a threshold on a stored metric for a duration.
CREATE TABLE alert_rules (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    spec       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE UNIQUE INDEX alert_rules_name_live ON alert_rules (name) WHERE deleted_at IS NULL;

-- Silences: matchers on instance labels, active in [starts_at, ends_at).
CREATE TABLE silences (
    id         uuid PRIMARY KEY,
    matchers   jsonb NOT NULL,
    comment    text NOT NULL,
    created_by text NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX silences_ends_at ON silences (ends_at);

-- Generic JSON webhook receivers added through the API (those in the settings file are not stored).
-- The secret signs deliveries (HMAC-SHA256); the API never returns it.
CREATE TABLE webhook_receivers (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    url        text NOT NULL,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE UNIQUE INDEX webhook_receivers_name_live ON webhook_receivers (name) WHERE deleted_at IS NULL;

-- XID errors are sticky in the samples (the last one seen); this records when each GPU's value changed,
-- so a rule can fire on a new XID for a while and then resolve.
CREATE TABLE gpu_xid_seen (
    node_id    text NOT NULL,
    gpu_index  integer NOT NULL,
    xid_last   integer NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (node_id, gpu_index)
);

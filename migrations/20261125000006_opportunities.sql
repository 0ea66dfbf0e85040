-- Optimization opportunities (issue #7), one row per stable key (`idle_gpu:<node>:<gpu>`,
-- `consolidation:<deployment>`, ...), upserted by the leader's refresher: a persisting opportunity is
-- updated in place, one that disappears is closed, a dismissed one stays dismissed while it persists.
CREATE TABLE opportunities (
    key                text PRIMARY KEY,
    id                 bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    kind               text NOT NULL,
    status             text NOT NULL CHECK (status IN ('open', 'closed', 'dismissed')),
    deployment         text,
    node_id            text,
    gpu_index          integer,
    title              text NOT NULL,
    evidence           jsonb NOT NULL,
    gpu_hours_per_week double precision NOT NULL,
    saving_per_week    double precision NOT NULL,
    currency           text NOT NULL,
    confidence         double precision NOT NULL,
    expected_value     double precision NOT NULL,
    latency            jsonb NOT NULL,
    action             jsonb NOT NULL,
    first_seen         timestamptz NOT NULL,
    last_seen          timestamptz NOT NULL,
    closed_at          timestamptz,
    dismissed_at       timestamptz,
    dismissed_reason   text
);
CREATE INDEX opportunities_status_value ON opportunities (status, expected_value DESC);

-- Anomaly events of GPU and deployment series (streaming detector + event hysteresis) and peer outliers.
-- Keyed by node_id / deployment first (Citus distribution column); '' where the event has none.
CREATE TABLE anomalies (
    node_id     text NOT NULL DEFAULT '',
    deployment  text NOT NULL DEFAULT '',
    id          bigint GENERATED ALWAYS AS IDENTITY,
    target      text NOT NULL,
    metric      text NOT NULL,
    source      text NOT NULL CHECK (source IN ('detector', 'peers')),
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    severity    text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    score       double precision NOT NULL,
    evidence    jsonb NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (node_id, deployment, id)
);
CREATE UNIQUE INDEX anomalies_one_open ON anomalies (node_id, deployment, target, metric) WHERE ended_at IS NULL;
CREATE INDEX anomalies_started_at ON anomalies (started_at DESC);

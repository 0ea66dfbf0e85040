-- fleetpilot schema v1.
-- Time-series tables are partitioned by day on `ts` (partitions are created by the server ahead of time and
-- dropped past the retention); their keys lead with node_id / deployment so the schema can be distributed
-- by node on Citus later (distribution column = node_id, or deployment for serving data).

CREATE TABLE nodes (
    node_id       text PRIMARY KEY,
    hostname      text NOT NULL,
    agent_version text NOT NULL,
    gpu_source    text NOT NULL,
    agent_group   text,
    deployment    text,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL
);

-- Idempotency of uploads: a batch (node_id, seq) is stored once.
CREATE TABLE ingest_batches (
    node_id         text NOT NULL,
    seq             bigint NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    gpu_samples     integer NOT NULL,
    serving_samples integer NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE INDEX ingest_batches_received_at ON ingest_batches (received_at);

CREATE TABLE gpu_samples (
    node_id          text NOT NULL,
    gpu_index        integer NOT NULL,
    ts               timestamptz NOT NULL,
    uuid             text NOT NULL,
    model            text NOT NULL,
    util_pct         real NOT NULL,
    mem_used_bytes   bigint NOT NULL,
    mem_total_bytes  bigint NOT NULL,
    power_w          real NOT NULL,
    temp_c           real NOT NULL,
    sm_clock_mhz     integer NOT NULL,
    mem_clock_mhz    integer NOT NULL,
    throttle_reasons bigint NOT NULL,
    ecc_dbe_total    bigint NOT NULL,
    xid_last         integer NOT NULL,
    sm_active        real,
    tensor_active    real
) PARTITION BY RANGE (ts);
CREATE INDEX gpu_samples_node_gpu_ts ON gpu_samples (node_id, gpu_index, ts);

CREATE TABLE serving_samples (
    node_id                 text NOT NULL,
    deployment              text NOT NULL,
    replica                 text NOT NULL,
    ts                      timestamptz NOT NULL,
    engine                  text NOT NULL,
    queue_depth             real NOT NULL,
    running                 real NOT NULL,
    kv_cache_pct            real,
    ttft_p50_s              real,
    ttft_p95_s              real,
    ttft_p99_s              real,
    itl_p50_s               real,
    itl_p95_s               real,
    itl_p99_s               real,
    requests_per_s          real NOT NULL,
    prompt_tokens_per_s     real NOT NULL,
    generation_tokens_per_s real NOT NULL,
    batch_size_mean         real
) PARTITION BY RANGE (ts);
CREATE INDEX serving_samples_deployment_ts ON serving_samples (deployment, ts);

-- Latest sample per GPU, maintained on ingest, for the dashboard and alert rules.
CREATE TABLE gpu_latest (
    node_id          text NOT NULL,
    gpu_index        integer NOT NULL,
    ts               timestamptz NOT NULL,
    uuid             text NOT NULL,
    model            text NOT NULL,
    util_pct         real NOT NULL,
    mem_used_bytes   bigint NOT NULL,
    mem_total_bytes  bigint NOT NULL,
    power_w          real NOT NULL,
    temp_c           real NOT NULL,
    sm_clock_mhz     integer NOT NULL,
    throttle_reasons bigint NOT NULL,
    xid_last         integer NOT NULL,
    PRIMARY KEY (node_id, gpu_index)
);

CREATE TABLE policies (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    version    integer NOT NULL,
    spec       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE UNIQUE INDEX policies_name_live ON policies (name) WHERE deleted_at IS NULL;

-- Every version of every policy, so a decision can say which version decided.
CREATE TABLE policy_versions (
    policy_id  uuid NOT NULL REFERENCES policies (id),
    version    integer NOT NULL,
    spec       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (policy_id, version)
);

CREATE TABLE forecasts (
    id         bigserial PRIMARY KEY,
    policy_id  uuid NOT NULL REFERENCES policies (id),
    made_at    timestamptz NOT NULL,
    step_secs  integer NOT NULL,
    model      text NOT NULL,
    history    double precision[] NOT NULL,
    point      double precision[] NOT NULL,
    lower      double precision[] NOT NULL,
    upper      double precision[] NOT NULL,
    level      double precision NOT NULL
);
CREATE INDEX forecasts_policy_made_at ON forecasts (policy_id, made_at DESC);

CREATE TABLE decisions (
    id               bigserial PRIMARY KEY,
    policy_id        uuid NOT NULL REFERENCES policies (id),
    policy_version   integer NOT NULL,
    decided_at       timestamptz NOT NULL,
    target           text NOT NULL,
    current_replicas integer NOT NULL,
    desired_replicas integer NOT NULL,
    winner           text NOT NULL,
    reason           text NOT NULL,
    proposals        jsonb NOT NULL,
    inputs           jsonb NOT NULL,
    forecast_id      bigint REFERENCES forecasts (id),
    dry_run          boolean NOT NULL,
    applied          boolean NOT NULL DEFAULT false,
    error            text
);
CREATE INDEX decisions_policy_decided_at ON decisions (policy_id, decided_at DESC);
CREATE INDEX decisions_decided_at ON decisions (decided_at DESC);

-- Commands to agents, delivered in the reply to their uploads until they report a result.
CREATE TABLE commands (
    id           uuid PRIMARY KEY,
    node_id      text NOT NULL,
    action       jsonb NOT NULL,
    decision_id  bigint REFERENCES decisions (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    completed_at timestamptz,
    ok           boolean,
    result       text
);
CREATE INDEX commands_pending ON commands (node_id, created_at) WHERE completed_at IS NULL;

CREATE TABLE alerts (
    id          bigserial PRIMARY KEY,
    dedup_key   text NOT NULL,
    rule        text NOT NULL,
    severity    text NOT NULL,
    source      text NOT NULL,
    component   text NOT NULL,
    group_name  text NOT NULL,
    summary     text NOT NULL,
    details     jsonb NOT NULL,
    state       text NOT NULL CHECK (state IN ('firing', 'resolved')),
    started_at  timestamptz NOT NULL,
    resolved_at timestamptz
);
CREATE UNIQUE INDEX alerts_one_open_per_key ON alerts (dedup_key) WHERE state = 'firing';

-- Transactional outbox: a delivery row is written in the same transaction as the alert state change.
CREATE TABLE alert_deliveries (
    id                 bigserial PRIMARY KEY,
    alert_id           bigint NOT NULL REFERENCES alerts (id),
    action             text NOT NULL CHECK (action IN ('trigger', 'resolve')),
    dedup_key          text NOT NULL,
    payload            jsonb NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at       timestamptz,
    failed_permanently boolean NOT NULL DEFAULT false,
    last_error         text
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND NOT failed_permanently;

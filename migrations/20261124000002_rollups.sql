-- 1-minute and 1-hour rollups of the raw samples, kept longer than the raw data, maintained incrementally
-- by the server's rollup job (complete minutes past a watermark, plus minutes made dirty by late data).
-- p95 of utilisation is exact per minute; the hourly p95 is the maximum of the minute p95s (conservative).

CREATE TABLE gpu_rollup_1m (
    node_id         text NOT NULL,
    gpu_index       integer NOT NULL,
    bucket          timestamptz NOT NULL,
    samples         integer NOT NULL,
    util_min        real NOT NULL,
    util_mean       real NOT NULL,
    util_max        real NOT NULL,
    util_p95        real NOT NULL,
    mem_used_max    bigint NOT NULL,
    mem_total_bytes bigint NOT NULL,
    power_mean      real NOT NULL,
    power_max       real NOT NULL,
    temp_mean       real NOT NULL,
    temp_max        real NOT NULL,
    sm_clock_min    integer NOT NULL,
    throttle_any    bigint NOT NULL,
    xid_max         integer NOT NULL,
    sm_active_mean  real,
    PRIMARY KEY (node_id, gpu_index, bucket)
);
CREATE INDEX gpu_rollup_1m_bucket ON gpu_rollup_1m (bucket);

CREATE TABLE gpu_rollup_1h (LIKE gpu_rollup_1m INCLUDING ALL);

CREATE TABLE serving_rollup_1m (
    deployment      text NOT NULL,
    replica         text NOT NULL,
    bucket          timestamptz NOT NULL,
    node_id         text NOT NULL,
    samples         integer NOT NULL,
    queue_mean      real NOT NULL,
    queue_max       real NOT NULL,
    running_mean    real NOT NULL,
    kv_cache_mean   real,
    kv_cache_max    real,
    ttft_p95_max    real,
    itl_p95_max     real,
    requests_per_s  real NOT NULL,
    prompt_tps      real NOT NULL,
    generation_tps  real NOT NULL,
    batch_size_mean real,
    PRIMARY KEY (deployment, replica, bucket)
);
CREATE INDEX serving_rollup_1m_bucket ON serving_rollup_1m (bucket);

CREATE TABLE serving_rollup_1h (LIKE serving_rollup_1m INCLUDING ALL);

-- Everything before `upto` has been rolled up (except dirty minutes below).
CREATE TABLE rollup_watermark (
    name text PRIMARY KEY,
    upto timestamptz NOT NULL
);

-- Minutes that received data after they were rolled up (late or replayed batches).
CREATE TABLE rollup_dirty (
    bucket timestamptz PRIMARY KEY
);

-- Latest sample per serving replica, maintained on ingest (the per-replica counterpart of gpu_latest).
CREATE TABLE serving_latest (
    deployment              text NOT NULL,
    replica                 text NOT NULL,
    node_id                 text NOT NULL,
    ts                      timestamptz NOT NULL,
    engine                  text NOT NULL,
    queue_depth             real NOT NULL,
    running                 real NOT NULL,
    kv_cache_pct            real,
    ttft_p95_s              real,
    itl_p95_s               real,
    requests_per_s          real NOT NULL,
    generation_tokens_per_s real NOT NULL,
    batch_size_mean         real,
    PRIMARY KEY (deployment, replica)
);

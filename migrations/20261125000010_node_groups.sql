-- Workload groups of nodes (issue #5): k-means over per-node workload profiles of the opportunity window,
-- recomputed by the leader's refresher on every refresh (the whole table is replaced). Keyed by node_id
-- first (Citus distribution column, like `anomalies`).
CREATE TABLE node_groups (
    node_id     text PRIMARY KEY,
    cluster     integer NOT NULL,
    label       text NOT NULL,
    kind        text NOT NULL,
    gpus        integer NOT NULL,
    -- The node's profile (fractions: mean_util, p95_util, mean_mem_frac, mean_power_frac, util_std,
    -- sm_active_mean) and its cluster's centroid.
    features    jsonb NOT NULL,
    centroid    jsonb NOT NULL,
    -- Mean silhouette of the whole grouping (0 with one group).
    silhouette  double precision NOT NULL,
    computed_at timestamptz NOT NULL
);
CREATE INDEX node_groups_cluster ON node_groups (cluster);

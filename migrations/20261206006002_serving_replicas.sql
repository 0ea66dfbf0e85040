-- Serving replicas stored once (issue #19): `serving_replicas` holds each replica's identity (deployment,
-- replica, node, engine) under a compact integer key (a reference table on Citus); `serving_rows` holds the
-- samples keyed by `replica_key` (its distribution column on Citus), in daily partitions dropped past the raw
-- retention. `serving_samples_between(from, to)` is the one raw reader (inlinable, so callers' filters reach
-- the indexes); the view `serving_samples` is the same over all time, and inserting into it goes to `serving_rows`.

CREATE TABLE serving_replicas (
    replica_key serial PRIMARY KEY, -- a sequence default, not an identity column: Citus takes only bigint identities
    deployment  text NOT NULL,
    replica     text NOT NULL,
    node_id     text NOT NULL,
    engine      text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (deployment, replica, node_id, engine)
);

CREATE TABLE serving_rows (
    ts                      timestamptz NOT NULL,
    replica_key             integer NOT NULL,
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
CREATE INDEX serving_rows_key_ts ON serving_rows (replica_key, ts);

CREATE FUNCTION serving_samples_between(t_from timestamptz, t_to timestamptz)
RETURNS TABLE (
    node_id text, deployment text, replica text, ts timestamptz, engine text, queue_depth real, running real,
    kv_cache_pct real, ttft_p50_s real, ttft_p95_s real, ttft_p99_s real, itl_p50_s real, itl_p95_s real,
    itl_p99_s real, requests_per_s real, prompt_tokens_per_s real, generation_tokens_per_s real,
    batch_size_mean real, replica_key integer
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT r.node_id, r.deployment, r.replica, s.ts, r.engine, s.queue_depth, s.running, s.kv_cache_pct,
           s.ttft_p50_s, s.ttft_p95_s, s.ttft_p99_s, s.itl_p50_s, s.itl_p95_s, s.itl_p99_s, s.requests_per_s,
           s.prompt_tokens_per_s, s.generation_tokens_per_s, s.batch_size_mean, s.replica_key
    FROM serving_rows s JOIN serving_replicas r ON r.replica_key = s.replica_key
    WHERE s.ts >= t_from AND s.ts < t_to
$$;

CREATE FUNCTION replica_key_of(p_deployment text, p_replica text, p_node text, p_engine text) RETURNS integer
LANGUAGE sql VOLATILE AS $$
    WITH ins AS (
        INSERT INTO serving_replicas (deployment, replica, node_id, engine)
        VALUES (p_deployment, p_replica, p_node, p_engine)
        ON CONFLICT (deployment, replica, node_id, engine) DO NOTHING RETURNING replica_key
    )
    SELECT replica_key FROM ins
    UNION ALL
    SELECT replica_key FROM serving_replicas
    WHERE deployment = p_deployment AND replica = p_replica AND node_id = p_node AND engine = p_engine
    LIMIT 1
$$;

-- Move the rows of the old layout (an upgraded installation keeps its history).
ALTER TABLE serving_samples RENAME TO serving_samples_v1;

INSERT INTO serving_replicas (deployment, replica, node_id, engine)
SELECT DISTINCT deployment, replica, node_id, engine FROM serving_samples_v1
ON CONFLICT DO NOTHING;

DO $$
DECLARE d date;
BEGIN
    FOR d IN SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM serving_samples_v1 LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF serving_rows FOR VALUES FROM (%L) TO (%L)',
            'serving_rows_' || to_char(d, 'YYYYMMDD'),
            to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
    END LOOP;
END $$;

INSERT INTO serving_rows (ts, replica_key, queue_depth, running, kv_cache_pct, ttft_p50_s, ttft_p95_s, ttft_p99_s,
                          itl_p50_s, itl_p95_s, itl_p99_s, requests_per_s, prompt_tokens_per_s,
                          generation_tokens_per_s, batch_size_mean)
SELECT s.ts, r.replica_key, s.queue_depth, s.running, s.kv_cache_pct, s.ttft_p50_s, s.ttft_p95_s, s.ttft_p99_s,
       s.itl_p50_s, s.itl_p95_s, s.itl_p99_s, s.requests_per_s, s.prompt_tokens_per_s, s.generation_tokens_per_s,
       s.batch_size_mean
FROM serving_samples_v1 s JOIN serving_replicas r USING (deployment, replica, node_id, engine);

DROP TABLE serving_samples_v1;

CREATE VIEW serving_samples AS SELECT * FROM serving_samples_between('-infinity', 'infinity');

CREATE FUNCTION serving_samples_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO serving_rows (ts, replica_key, queue_depth, running, kv_cache_pct, ttft_p50_s, ttft_p95_s,
                              ttft_p99_s, itl_p50_s, itl_p95_s, itl_p99_s, requests_per_s, prompt_tokens_per_s,
                              generation_tokens_per_s, batch_size_mean)
    VALUES (NEW.ts, replica_key_of(NEW.deployment, NEW.replica, NEW.node_id, NEW.engine), NEW.queue_depth,
            NEW.running, NEW.kv_cache_pct, NEW.ttft_p50_s, NEW.ttft_p95_s, NEW.ttft_p99_s, NEW.itl_p50_s,
            NEW.itl_p95_s, NEW.itl_p99_s, NEW.requests_per_s, NEW.prompt_tokens_per_s,
            NEW.generation_tokens_per_s, NEW.batch_size_mean);
    RETURN NEW;
END $$;
CREATE TRIGGER serving_samples_insert INSTEAD OF INSERT ON serving_samples
    FOR EACH ROW EXECUTE FUNCTION serving_samples_insert();

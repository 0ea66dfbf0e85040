-- Serving telemetry packed like GPU telemetry (issue #19): hot rows for the newest hour, packed history.
--
-- * `serving_hot` holds the newest serving samples as rows keyed by `replica_key`, in hourly partitions the
--   server creates on demand (with the GPU ones). Once an hour is complete, plus a grace period for late
--   samples, the packer folds it into `serving_chunks` and drops the partition.
-- * `serving_chunks` holds one row per replica per 10-minute chunk, one array per metric (timestamps as
--   millisecond offsets from the chunk start), TOASTed with lz4, in daily partitions dropped past the raw
--   retention. A late sample for a packed chunk is merged into it on the next pass.
-- * Both distribute by `replica_key` on Citus (it leads every key) with no schema change.
-- * `serving_samples_between(from, to)` stays the one raw reader, now over both layouts; the view
--   `serving_samples` and its insert trigger keep working for ad-hoc SQL.

CREATE TABLE serving_hot (
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
CREATE INDEX serving_hot_key_ts ON serving_hot (replica_key, ts);

CREATE TABLE serving_chunks (
    replica_key             integer NOT NULL,
    chunk_start             timestamptz NOT NULL,
    samples                 integer NOT NULL,
    ts_off_ms               integer[] COMPRESSION lz4 NOT NULL,
    queue_depth             real[] COMPRESSION lz4 NOT NULL,
    running                 real[] COMPRESSION lz4 NOT NULL,
    kv_cache_pct            real[] COMPRESSION lz4 NOT NULL,
    ttft_p50_s              real[] COMPRESSION lz4 NOT NULL,
    ttft_p95_s              real[] COMPRESSION lz4 NOT NULL,
    ttft_p99_s              real[] COMPRESSION lz4 NOT NULL,
    itl_p50_s               real[] COMPRESSION lz4 NOT NULL,
    itl_p95_s               real[] COMPRESSION lz4 NOT NULL,
    itl_p99_s               real[] COMPRESSION lz4 NOT NULL,
    requests_per_s          real[] COMPRESSION lz4 NOT NULL,
    prompt_tokens_per_s     real[] COMPRESSION lz4 NOT NULL,
    generation_tokens_per_s real[] COMPRESSION lz4 NOT NULL,
    batch_size_mean         real[] COMPRESSION lz4 NOT NULL,
    PRIMARY KEY (replica_key, chunk_start)
) PARTITION BY RANGE (chunk_start);
-- Fleet-wide reads of a time window (rollups of late minutes).
CREATE INDEX serving_chunks_start ON serving_chunks (chunk_start);

-- Move the rows of the previous layout into chunks (an upgraded installation keeps its history).
DO $$
DECLARE d date;
BEGIN
    FOR d IN SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM serving_rows LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF serving_chunks FOR VALUES FROM (%L) TO (%L)',
            'serving_chunks_' || to_char(d, 'YYYYMMDD'),
            to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
    END LOOP;
END $$;

INSERT INTO serving_chunks (replica_key, chunk_start, samples, ts_off_ms, queue_depth, running, kv_cache_pct,
                            ttft_p50_s, ttft_p95_s, ttft_p99_s, itl_p50_s, itl_p95_s, itl_p99_s, requests_per_s,
                            prompt_tokens_per_s, generation_tokens_per_s, batch_size_mean)
SELECT s.replica_key, s.chunk_start, count(*),
       array_agg(round(extract(epoch FROM s.ts - s.chunk_start) * 1000)::integer ORDER BY s.ts),
       array_agg(s.queue_depth ORDER BY s.ts), array_agg(s.running ORDER BY s.ts),
       array_agg(s.kv_cache_pct ORDER BY s.ts), array_agg(s.ttft_p50_s ORDER BY s.ts),
       array_agg(s.ttft_p95_s ORDER BY s.ts), array_agg(s.ttft_p99_s ORDER BY s.ts),
       array_agg(s.itl_p50_s ORDER BY s.ts), array_agg(s.itl_p95_s ORDER BY s.ts),
       array_agg(s.itl_p99_s ORDER BY s.ts), array_agg(s.requests_per_s ORDER BY s.ts),
       array_agg(s.prompt_tokens_per_s ORDER BY s.ts), array_agg(s.generation_tokens_per_s ORDER BY s.ts),
       array_agg(s.batch_size_mean ORDER BY s.ts)
FROM (SELECT *, date_bin('10 minutes', ts, timestamptz '2000-01-01 00:00:00+00') AS chunk_start FROM serving_rows) s
GROUP BY s.replica_key, s.chunk_start;

DROP TABLE serving_rows;

CREATE OR REPLACE FUNCTION serving_samples_between(t_from timestamptz, t_to timestamptz)
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
    FROM serving_hot s JOIN serving_replicas r ON r.replica_key = s.replica_key
    WHERE s.ts >= t_from AND s.ts < t_to
    UNION ALL
    SELECT r.node_id, r.deployment, r.replica, c.chunk_start + z.off * interval '1 millisecond', r.engine,
           z.queue_depth, z.running, z.kv_cache_pct, z.ttft_p50_s, z.ttft_p95_s, z.ttft_p99_s, z.itl_p50_s,
           z.itl_p95_s, z.itl_p99_s, z.requests_per_s, z.prompt_tokens_per_s, z.generation_tokens_per_s,
           z.batch_size_mean, c.replica_key
    FROM serving_chunks c JOIN serving_replicas r ON r.replica_key = c.replica_key
    CROSS JOIN LATERAL unnest(c.ts_off_ms, c.queue_depth, c.running, c.kv_cache_pct, c.ttft_p50_s, c.ttft_p95_s,
                              c.ttft_p99_s, c.itl_p50_s, c.itl_p95_s, c.itl_p99_s, c.requests_per_s,
                              c.prompt_tokens_per_s, c.generation_tokens_per_s, c.batch_size_mean)
        AS z(off, queue_depth, running, kv_cache_pct, ttft_p50_s, ttft_p95_s, ttft_p99_s, itl_p50_s, itl_p95_s,
             itl_p99_s, requests_per_s, prompt_tokens_per_s, generation_tokens_per_s, batch_size_mean)
    WHERE c.chunk_start > t_from - interval '10 minutes' AND c.chunk_start < t_to
      AND c.chunk_start + z.off * interval '1 millisecond' >= t_from
      AND c.chunk_start + z.off * interval '1 millisecond' < t_to
$$;

CREATE OR REPLACE FUNCTION serving_samples_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO serving_hot (ts, replica_key, queue_depth, running, kv_cache_pct, ttft_p50_s, ttft_p95_s,
                             ttft_p99_s, itl_p50_s, itl_p95_s, itl_p99_s, requests_per_s, prompt_tokens_per_s,
                             generation_tokens_per_s, batch_size_mean)
    VALUES (NEW.ts, replica_key_of(NEW.deployment, NEW.replica, NEW.node_id, NEW.engine), NEW.queue_depth,
            NEW.running, NEW.kv_cache_pct, NEW.ttft_p50_s, NEW.ttft_p95_s, NEW.ttft_p99_s, NEW.itl_p50_s,
            NEW.itl_p95_s, NEW.itl_p99_s, NEW.requests_per_s, NEW.prompt_tokens_per_s,
            NEW.generation_tokens_per_s, NEW.batch_size_mean);
    RETURN NEW;
END $$;

-- Fleet-scale GPU telemetry (issue #19): dimensions stored once, hot rows for the newest hour, packed history.
--
-- * `gpus` holds each GPU's identity (node, index, UUID, model) once, under a compact integer `gpu_key`.
--   On Citus it is a reference table (small, copied to every worker).
-- * `gpu_samples_hot` holds the newest samples as rows keyed by `gpu_key`, in hourly partitions that the
--   server creates on demand. Once an hour is complete (plus a grace period for late samples) the packer
--   folds it into `gpu_chunks` and drops the partition in the same transaction.
-- * `gpu_chunks` holds one row per GPU per 10-minute chunk, one array per metric (timestamps as millisecond
--   offsets from the chunk start), TOASTed with lz4; daily partitions, dropped past the raw retention.
--   A late sample for a packed chunk lands in a (re-created) hourly partition and is merged into its chunk
--   on the next pass: never lost, never counted twice.
-- * Both sample tables distribute by `gpu_key` on Citus (it leads every key) with no schema change.
-- * `gpu_samples_between(from, to)` is the one raw reader: it returns the rows of both layouts in the
--   original shape. It is an inlinable SQL function, so callers' filters (node, GPU) reach the indexes.
--   The view `gpu_samples` is the same over all time, for ad-hoc SQL; inserting into it goes to the hot table.

CREATE TABLE gpus (
    gpu_key    serial PRIMARY KEY, -- a sequence default, not an identity column: Citus takes only bigint identities
    node_id    text NOT NULL,
    gpu_index  integer NOT NULL,
    uuid       text NOT NULL,
    model      text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    UNIQUE (node_id, gpu_index, uuid, model)
);

-- 8-byte columns first, then 4-byte ones: no alignment padding inside a row.
CREATE TABLE gpu_samples_hot (
    ts               timestamptz NOT NULL,
    mem_used_bytes   bigint,
    mem_total_bytes  bigint,
    throttle_reasons bigint,
    ecc_dbe_total    bigint,
    gpu_key          integer NOT NULL,
    util_pct         real,
    power_w          real,
    temp_c           real,
    sm_clock_mhz     integer,
    mem_clock_mhz    integer,
    xid_last         integer,
    sm_active        real,
    tensor_active    real
) PARTITION BY RANGE (ts);
CREATE INDEX gpu_samples_hot_key_ts ON gpu_samples_hot (gpu_key, ts);

CREATE TABLE gpu_chunks (
    gpu_key          integer NOT NULL,
    chunk_start      timestamptz NOT NULL,
    samples          integer NOT NULL,
    ts_off_ms        integer[] COMPRESSION lz4 NOT NULL,
    util_pct         real[] COMPRESSION lz4 NOT NULL,
    mem_used_bytes   bigint[] COMPRESSION lz4 NOT NULL,
    mem_total_bytes  bigint[] COMPRESSION lz4 NOT NULL,
    power_w          real[] COMPRESSION lz4 NOT NULL,
    temp_c           real[] COMPRESSION lz4 NOT NULL,
    sm_clock_mhz     integer[] COMPRESSION lz4 NOT NULL,
    mem_clock_mhz    integer[] COMPRESSION lz4 NOT NULL,
    throttle_reasons bigint[] COMPRESSION lz4 NOT NULL,
    ecc_dbe_total    bigint[] COMPRESSION lz4 NOT NULL,
    xid_last         integer[] COMPRESSION lz4 NOT NULL,
    sm_active        real[] COMPRESSION lz4 NOT NULL,
    tensor_active    real[] COMPRESSION lz4 NOT NULL,
    PRIMARY KEY (gpu_key, chunk_start)
) PARTITION BY RANGE (chunk_start);
-- Fleet-wide reads of a time window (rollups of late minutes, opportunity scans).
CREATE INDEX gpu_chunks_start ON gpu_chunks (chunk_start);

CREATE FUNCTION gpu_samples_between(t_from timestamptz, t_to timestamptz)
RETURNS TABLE (
    node_id text, gpu_index integer, ts timestamptz, uuid text, model text, util_pct real,
    mem_used_bytes bigint, mem_total_bytes bigint, power_w real, temp_c real, sm_clock_mhz integer,
    mem_clock_mhz integer, throttle_reasons bigint, ecc_dbe_total bigint, xid_last integer, sm_active real,
    tensor_active real, gpu_key integer
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT g.node_id, g.gpu_index, h.ts, g.uuid, g.model, h.util_pct, h.mem_used_bytes, h.mem_total_bytes,
           h.power_w, h.temp_c, h.sm_clock_mhz, h.mem_clock_mhz, h.throttle_reasons, h.ecc_dbe_total, h.xid_last,
           h.sm_active, h.tensor_active, h.gpu_key
    FROM gpu_samples_hot h JOIN gpus g ON g.gpu_key = h.gpu_key
    WHERE h.ts >= t_from AND h.ts < t_to
    UNION ALL
    SELECT g.node_id, g.gpu_index, c.chunk_start + z.off * interval '1 millisecond', g.uuid, g.model, z.util_pct,
           z.mem_used_bytes, z.mem_total_bytes, z.power_w, z.temp_c, z.sm_clock_mhz, z.mem_clock_mhz,
           z.throttle_reasons, z.ecc_dbe_total, z.xid_last, z.sm_active, z.tensor_active, c.gpu_key
    FROM gpu_chunks c JOIN gpus g ON g.gpu_key = c.gpu_key
    CROSS JOIN LATERAL unnest(c.ts_off_ms, c.util_pct, c.mem_used_bytes, c.mem_total_bytes, c.power_w, c.temp_c,
                              c.sm_clock_mhz, c.mem_clock_mhz, c.throttle_reasons, c.ecc_dbe_total, c.xid_last,
                              c.sm_active, c.tensor_active)
        AS z(off, util_pct, mem_used_bytes, mem_total_bytes, power_w, temp_c, sm_clock_mhz, mem_clock_mhz,
             throttle_reasons, ecc_dbe_total, xid_last, sm_active, tensor_active)
    WHERE c.chunk_start > t_from - interval '10 minutes' AND c.chunk_start < t_to
      AND c.chunk_start + z.off * interval '1 millisecond' >= t_from
      AND c.chunk_start + z.off * interval '1 millisecond' < t_to
$$;

-- How far the 1-minute rollups reach. The charts' "raw tail" passes it to the readers above as a function,
-- not a sub-select: PostgreSQL does not inline a set-returning function whose arguments hold a sub-select,
-- and a reader that is not inlined reads every series of the range before the caller's filter applies.
CREATE FUNCTION rollup_upto_1m() RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT upto FROM rollup_watermark WHERE name = '1m'
$$;

-- The key of a GPU identity, created on first sight (for SQL writers; the server resolves keys in memory).
CREATE FUNCTION gpu_key_of(p_node text, p_index integer, p_uuid text, p_model text) RETURNS integer
LANGUAGE sql VOLATILE AS $$
    WITH ins AS (
        INSERT INTO gpus (node_id, gpu_index, uuid, model) VALUES (p_node, p_index, p_uuid, p_model)
        ON CONFLICT (node_id, gpu_index, uuid, model) DO NOTHING RETURNING gpu_key
    )
    SELECT gpu_key FROM ins
    UNION ALL
    SELECT gpu_key FROM gpus WHERE node_id = p_node AND gpu_index = p_index AND uuid = p_uuid AND model = p_model
    LIMIT 1
$$;

-- Move the rows of the old layout into chunks (an upgraded installation keeps its history).
ALTER TABLE gpu_samples RENAME TO gpu_samples_v1;

INSERT INTO gpus (node_id, gpu_index, uuid, model)
SELECT DISTINCT node_id, gpu_index, uuid, model FROM gpu_samples_v1
ON CONFLICT DO NOTHING;

DO $$
DECLARE d date;
BEGIN
    FOR d IN SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM gpu_samples_v1 LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF gpu_chunks FOR VALUES FROM (%L) TO (%L)',
            'gpu_chunks_' || to_char(d, 'YYYYMMDD'),
            to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
    END LOOP;
END $$;

INSERT INTO gpu_chunks (gpu_key, chunk_start, samples, ts_off_ms, util_pct, mem_used_bytes, mem_total_bytes,
                        power_w, temp_c, sm_clock_mhz, mem_clock_mhz, throttle_reasons, ecc_dbe_total, xid_last,
                        sm_active, tensor_active)
SELECT k.gpu_key, s.chunk_start, count(*),
       array_agg(round(extract(epoch FROM s.ts - s.chunk_start) * 1000)::integer ORDER BY s.ts),
       array_agg(s.util_pct ORDER BY s.ts), array_agg(s.mem_used_bytes ORDER BY s.ts),
       array_agg(s.mem_total_bytes ORDER BY s.ts), array_agg(s.power_w ORDER BY s.ts),
       array_agg(s.temp_c ORDER BY s.ts), array_agg(s.sm_clock_mhz ORDER BY s.ts),
       array_agg(s.mem_clock_mhz ORDER BY s.ts), array_agg(s.throttle_reasons ORDER BY s.ts),
       array_agg(s.ecc_dbe_total ORDER BY s.ts), array_agg(s.xid_last ORDER BY s.ts),
       array_agg(s.sm_active ORDER BY s.ts), array_agg(s.tensor_active ORDER BY s.ts)
FROM (SELECT *, date_bin('10 minutes', ts, timestamptz '2000-01-01 00:00:00+00') AS chunk_start FROM gpu_samples_v1) s
JOIN gpus k USING (node_id, gpu_index, uuid, model)
GROUP BY k.gpu_key, s.chunk_start;

DROP TABLE gpu_samples_v1;

CREATE VIEW gpu_samples AS SELECT * FROM gpu_samples_between('-infinity', 'infinity');

CREATE FUNCTION gpu_samples_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gpu_samples_hot (ts, mem_used_bytes, mem_total_bytes, throttle_reasons, ecc_dbe_total, gpu_key,
                                 util_pct, power_w, temp_c, sm_clock_mhz, mem_clock_mhz, xid_last, sm_active,
                                 tensor_active)
    VALUES (NEW.ts, NEW.mem_used_bytes, NEW.mem_total_bytes, NEW.throttle_reasons, NEW.ecc_dbe_total,
            gpu_key_of(NEW.node_id, NEW.gpu_index, NEW.uuid, NEW.model), NEW.util_pct, NEW.power_w, NEW.temp_c,
            NEW.sm_clock_mhz, NEW.mem_clock_mhz, NEW.xid_last, NEW.sm_active, NEW.tensor_active);
    RETURN NEW;
END $$;
CREATE TRIGGER gpu_samples_insert INSTEAD OF INSERT ON gpu_samples FOR EACH ROW EXECUTE FUNCTION gpu_samples_insert();

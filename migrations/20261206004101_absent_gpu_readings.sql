-- A GPU reading the agent could not take (an NVML call that failed, a MIG slice without per-instance
-- utilisation, a DCGM field the exporter does not publish) is stored as NULL, not 0: a 0 is
-- indistinguishable from an idle GPU. Aggregates (avg, max, percentile_cont) skip NULLs, so a rollup
-- minute is NULL only when every sample in it lacked the reading.
ALTER TABLE gpu_samples
    ALTER COLUMN util_pct DROP NOT NULL,
    ALTER COLUMN mem_used_bytes DROP NOT NULL,
    ALTER COLUMN mem_total_bytes DROP NOT NULL,
    ALTER COLUMN power_w DROP NOT NULL,
    ALTER COLUMN temp_c DROP NOT NULL,
    ALTER COLUMN sm_clock_mhz DROP NOT NULL,
    ALTER COLUMN mem_clock_mhz DROP NOT NULL,
    ALTER COLUMN throttle_reasons DROP NOT NULL,
    ALTER COLUMN ecc_dbe_total DROP NOT NULL,
    ALTER COLUMN xid_last DROP NOT NULL;

ALTER TABLE gpu_latest
    ALTER COLUMN util_pct DROP NOT NULL,
    ALTER COLUMN mem_used_bytes DROP NOT NULL,
    ALTER COLUMN mem_total_bytes DROP NOT NULL,
    ALTER COLUMN power_w DROP NOT NULL,
    ALTER COLUMN temp_c DROP NOT NULL,
    ALTER COLUMN sm_clock_mhz DROP NOT NULL,
    ALTER COLUMN throttle_reasons DROP NOT NULL,
    ALTER COLUMN xid_last DROP NOT NULL;

ALTER TABLE gpu_rollup_1m
    ALTER COLUMN util_min DROP NOT NULL,
    ALTER COLUMN util_mean DROP NOT NULL,
    ALTER COLUMN util_max DROP NOT NULL,
    ALTER COLUMN util_p95 DROP NOT NULL,
    ALTER COLUMN mem_used_max DROP NOT NULL,
    ALTER COLUMN mem_total_bytes DROP NOT NULL,
    ALTER COLUMN power_mean DROP NOT NULL,
    ALTER COLUMN power_max DROP NOT NULL,
    ALTER COLUMN temp_mean DROP NOT NULL,
    ALTER COLUMN temp_max DROP NOT NULL,
    ALTER COLUMN sm_clock_min DROP NOT NULL,
    ALTER COLUMN throttle_any DROP NOT NULL,
    ALTER COLUMN xid_max DROP NOT NULL;

ALTER TABLE gpu_rollup_1h
    ALTER COLUMN util_min DROP NOT NULL,
    ALTER COLUMN util_mean DROP NOT NULL,
    ALTER COLUMN util_max DROP NOT NULL,
    ALTER COLUMN util_p95 DROP NOT NULL,
    ALTER COLUMN mem_used_max DROP NOT NULL,
    ALTER COLUMN mem_total_bytes DROP NOT NULL,
    ALTER COLUMN power_mean DROP NOT NULL,
    ALTER COLUMN power_max DROP NOT NULL,
    ALTER COLUMN temp_mean DROP NOT NULL,
    ALTER COLUMN temp_max DROP NOT NULL,
    ALTER COLUMN sm_clock_min DROP NOT NULL,
    ALTER COLUMN throttle_any DROP NOT NULL,
    ALTER COLUMN xid_max DROP NOT NULL;

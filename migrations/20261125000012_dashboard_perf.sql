-- Dashboard at fleet scale (issue #8: 10,000 GPUs, 500 deployments, 50 clients).

-- The decisions list's target search is a substring match (`target ILIKE '%dep-42%'`): without a trigram
-- index it reads every decision ever made, twice per page (rows and count). pg_trgm ships with PostgreSQL's
-- contrib modules and is a trusted extension, but it is not everywhere: where it is missing or may not be
-- created the search stays correct, only slower, and the migration still applies.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX decisions_target_trgm ON decisions USING gin (target gin_trgm_ops);
    END IF;
EXCEPTION WHEN insufficient_privilege OR feature_not_supported THEN
    RAISE NOTICE 'pg_trgm unavailable (%): the decisions target search scans', SQLERRM;
END
$$;

-- The deployment page's rebatch commands: commands of every node and kind share the table, and it grows
-- with every decision acted on.
CREATE INDEX commands_rebatch_deployment ON commands ((action ->> 'deployment'), created_at DESC)
    WHERE action ->> 'kind' = 'rebatch';

-- The opportunities list sorted by GPU-hours over every status (the status-led indexes serve one status).
CREATE INDEX opportunities_gpu_hours ON opportunities (gpu_hours_per_week DESC, expected_value DESC, key);

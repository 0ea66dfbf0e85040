-- Idle capacity of the fleet (issue #7): per refresh of the opportunities, how many GPU-equivalents sat
-- allocated with nothing loaded and no work over the window, in GPU-hours and money per week. One row per
-- refresh (the leader writes; the dashboard and `GET /api/v1/idle-capacity` read the latest); rows older
-- than a week are pruned by the refresher. Time-keyed only: small, no distribution column needed.
CREATE TABLE idle_capacity (
    computed_at         timestamptz PRIMARY KEY,
    window_start        timestamptz NOT NULL,
    window_end          timestamptz NOT NULL,
    gpus_observed       integer NOT NULL,
    idle_gpu_equivalent double precision NOT NULL,
    idle_share          double precision NOT NULL,
    gpu_hours_per_week  double precision NOT NULL,
    money_per_week      double precision NOT NULL,
    currency            text NOT NULL,
    by_model            jsonb NOT NULL
);

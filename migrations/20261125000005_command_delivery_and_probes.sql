-- Commands are long-polled: the agent acknowledges receipt at once (acked_at), results follow (completed_at).
-- delivered_at now holds the latest delivery, so a reply lost on the way is delivered again.
ALTER TABLE commands ADD COLUMN acked_at timestamptz;

-- Active health probes (memory bandwidth measured by an nvrtc kernel), at agent start and on command.
-- Keyed like the samples (node_id first: the Citus distribution column).
CREATE TABLE gpu_probes (
    node_id        text NOT NULL,
    gpu_index      integer NOT NULL,
    ts             timestamptz NOT NULL,
    uuid           text,
    bandwidth_gb_s double precision,
    error          text,
    PRIMARY KEY (node_id, gpu_index, ts)
);

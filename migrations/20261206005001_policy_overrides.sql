-- One-click actions reach the leader as recorded overrides: the control loop applies the count on its next tick,
-- fenced like its own decisions, and holds it until hold_until. Nothing scales outside the leader.
CREATE TABLE policy_overrides (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy_id   uuid NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    replicas    integer NOT NULL CHECK (replicas >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    hold_until  timestamptz NOT NULL,
    created_by  text NOT NULL,
    reason      text NOT NULL,
    applied_at  timestamptz,
    decision_id bigint REFERENCES decisions (id) ON DELETE SET NULL
);
CREATE INDEX policy_overrides_policy ON policy_overrides (policy_id, created_at DESC, id DESC);
CREATE INDEX policy_overrides_hold ON policy_overrides (hold_until);

-- Node identity and scope (issue #15): enrollment binds a new node id only; re-enrolling an existing node
-- needs an operator's one-time grant; tokens and credentials can be revoked; a node credential writes
-- serving rows only for the deployments assigned to it. Every change is recorded in enrollment_events.
ALTER TABLE enrollment_tokens
    ADD COLUMN revoked_at  timestamptz,
    -- Deployments (`namespace/name` or `namespace/*`) the nodes enrolled with this token may report.
    ADD COLUMN deployments text[] NOT NULL DEFAULT '{}';

ALTER TABLE node_credentials
    ADD COLUMN revoked_at  timestamptz,
    ADD COLUMN deployments text[] NOT NULL DEFAULT '{}';

-- One pending re-enrollment per node, created by an operator, spent by the next enrollment of that node.
CREATE TABLE reenroll_grants (
    node_id    text PRIMARY KEY,
    granted_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

CREATE TABLE enrollment_events (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    node_id  text,
    token_id uuid,
    -- enrolled, re-enrolled, re-enroll-granted, credential-revoked, token-revoked, deployments-set,
    -- refused-existing-node
    kind     text NOT NULL,
    actor    text NOT NULL,
    detail   text NOT NULL DEFAULT ''
);
CREATE INDEX enrollment_events_node ON enrollment_events (node_id, at);

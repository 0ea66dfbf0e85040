-- Agent enrollment: an operator creates a short-lived enrollment token; a node's installer exchanges it for
-- a per-node credential that can only write that node's data. Only SHA-256 digests of tokens are stored.
CREATE TABLE enrollment_tokens (
    id           uuid PRIMARY KEY,
    token_sha256 bytea NOT NULL UNIQUE,
    note         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    max_uses     integer NOT NULL,
    uses         integer NOT NULL DEFAULT 0
);

CREATE TABLE node_credentials (
    node_id      text PRIMARY KEY,
    token_sha256 bytea NOT NULL UNIQUE,
    enrolled_by  uuid REFERENCES enrollment_tokens (id),
    created_at   timestamptz NOT NULL DEFAULT now()
);

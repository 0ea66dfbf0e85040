-- Dashboard access: operators and viewers with argon2 password hashes, and their sessions. Only the SHA-256
-- of a session id is stored, so a database dump cannot be replayed as a cookie.
CREATE TABLE dashboard_users (
    username      text PRIMARY KEY,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('viewer', 'operator')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dashboard_sessions (
    id_sha256  bytea PRIMARY KEY,
    username   text NOT NULL REFERENCES dashboard_users (username) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_expires_at ON dashboard_sessions (expires_at);


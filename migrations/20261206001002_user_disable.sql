-- Users can be disabled (issue #15): a disabled user cannot log in and has no session.
ALTER TABLE dashboard_users ADD COLUMN disabled_at timestamptz;

-- Policies owned by a Kubernetes ScalingPolicy custom resource (issue #16): `owner` names it
-- (`ScalingPolicy <namespace>/<name>`). The leader's controller creates, updates and deletes them from the
-- resources; the REST API and the dashboard refuse to change them (edit the resource instead).
ALTER TABLE policies ADD COLUMN owner text;
CREATE UNIQUE INDEX policies_owner_live ON policies (owner) WHERE deleted_at IS NULL AND owner IS NOT NULL;

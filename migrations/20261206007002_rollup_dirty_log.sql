-- Dirty minutes become an append-only log (no unique key). With a primary key, a late batch's
-- `INSERT ... ON CONFLICT DO NOTHING` on a minute the rollup job had claimed (deleted, not yet committed) waited
-- for that job's whole transaction, and with it every ingest group behind it: a rollup recomputing a busy late
-- minute stalled ingest for as long as it ran. Now ingest only appends, which never waits; the job deletes
-- the marks its snapshot sees, so a mark committed after that snapshot stays for the next run, and data
-- committed before it is visible to the recompute that follows.
ALTER TABLE rollup_dirty DROP CONSTRAINT rollup_dirty_pkey;
CREATE INDEX rollup_dirty_bucket ON rollup_dirty (bucket);

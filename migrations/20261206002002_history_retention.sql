-- Retention for every history table (issue #15): rows that point at history may outlive it, so their references
-- no longer block its deletion. An incident's deliveries go with it.
ALTER TABLE commands DROP CONSTRAINT commands_decision_id_fkey,
    ADD CONSTRAINT commands_decision_id_fkey FOREIGN KEY (decision_id) REFERENCES decisions (id) ON DELETE SET NULL;
ALTER TABLE decisions DROP CONSTRAINT decisions_forecast_id_fkey,
    ADD CONSTRAINT decisions_forecast_id_fkey FOREIGN KEY (forecast_id) REFERENCES forecasts (id) ON DELETE SET NULL;
ALTER TABLE opportunity_actions DROP CONSTRAINT opportunity_actions_decision_id_fkey,
    ADD CONSTRAINT opportunity_actions_decision_id_fkey FOREIGN KEY (decision_id) REFERENCES decisions (id) ON DELETE SET NULL;
ALTER TABLE alert_instances DROP CONSTRAINT alert_instances_incident_id_fkey,
    ADD CONSTRAINT alert_instances_incident_id_fkey FOREIGN KEY (incident_id) REFERENCES alerts (id) ON DELETE SET NULL;
ALTER TABLE alert_deliveries DROP CONSTRAINT alert_deliveries_alert_id_fkey,
    ADD CONSTRAINT alert_deliveries_alert_id_fkey FOREIGN KEY (alert_id) REFERENCES alerts (id) ON DELETE CASCADE;

-- The deletes below read these.
CREATE INDEX IF NOT EXISTS decisions_decided_at ON decisions (decided_at);
CREATE INDEX IF NOT EXISTS forecasts_made_at ON forecasts (made_at);
CREATE INDEX IF NOT EXISTS commands_created_at ON commands (created_at);
CREATE INDEX IF NOT EXISTS commands_decision ON commands (decision_id);
CREATE INDEX IF NOT EXISTS decisions_forecast ON decisions (forecast_id);
CREATE INDEX IF NOT EXISTS alert_deliveries_alert ON alert_deliveries (alert_id);
CREATE INDEX IF NOT EXISTS alert_instances_incident ON alert_instances (incident_id);
CREATE INDEX IF NOT EXISTS opportunity_actions_decision ON opportunity_actions (decision_id);

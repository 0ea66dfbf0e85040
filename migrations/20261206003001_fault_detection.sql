-- Fault detection (issue 17, `fleetpilot eval faults`).
-- When a GPU's reading (utilisation, memory, power, temperature, SM clock) last changed: a reading repeated
-- unchanged for a minute is a stuck exporter (`gpu-stuck-reading`). NULL until the next sample.
ALTER TABLE gpu_latest ADD COLUMN changed_at timestamptz;

-- Memory-leak events of the anomaly sweep (`forecasting::leak`).
ALTER TABLE anomalies DROP CONSTRAINT anomalies_source_check;
ALTER TABLE anomalies ADD CONSTRAINT anomalies_source_check CHECK (source IN ('detector', 'peers', 'leak'));

-- When a GPU's reading (utilisation, memory, power, temperature, SM clock) last changed: a reading repeated
-- unchanged for a minute is a stuck exporter (`gpu-stuck-reading`). NULL until the next sample.
ALTER TABLE gpu_latest ADD COLUMN changed_at timestamptz;

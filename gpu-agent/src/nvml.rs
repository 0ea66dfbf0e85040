//! Real GPU telemetry through NVML (`nvml-wrapper` loads `libnvidia-ml.so.1` at run time, so the agent
//! builds and runs on machines without a GPU and reports "no GPU" there).

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};

use crate::protocol::GpuSample;

/// An initialised NVML handle.
pub struct NvmlSource {
    nvml: Nvml,
    count: u32,
}

impl std::fmt::Debug for NvmlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSource").field("count", &self.count).finish()
    }
}

impl NvmlSource {
    /// Initialises NVML; the error says why there is no GPU telemetry (no driver, no devices).
    pub fn init() -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))?;
        let count = nvml.device_count().map_err(|e| format!("NVML device count: {e}"))?;
        if count == 0 {
            return Err("NVML found no GPU".into());
        }
        Ok(Self { nvml, count })
    }

    /// Number of GPUs.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Driver version, for the log.
    pub fn driver_version(&self) -> String {
        self.nvml.sys_driver_version().unwrap_or_else(|e| format!("unknown ({e})"))
    }

    /// One sample per GPU; a field NVML cannot read is reported as 0 / absent rather than failing the GPU.
    pub fn sample(&self, now_ms: i64) -> Vec<GpuSample> {
        let mut out = Vec::with_capacity(self.count as usize);
        for i in 0..self.count {
            let d = match self.nvml.device_by_index(i) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(gpu = i, error = %e, "NVML device unavailable");
                    continue;
                }
            };
            let mem = d.memory_info().ok();
            let mem_total = mem.as_ref().map_or(0, |m| m.total);
            out.push(GpuSample {
                ts_ms: now_ms,
                gpu_index: i,
                uuid: d.uuid().unwrap_or_else(|_| format!("GPU-index-{i}")),
                model: d.name().unwrap_or_default(),
                util_pct: d.utilization_rates().map_or(0.0, |u| f64::from(u.gpu).min(100.0)),
                mem_used_bytes: mem.as_ref().map_or(0, |m| m.used.min(mem_total)),
                mem_total_bytes: mem_total,
                // NVML reports milliwatts.
                power_w: d.power_usage().map_or(0.0, |mw| f64::from(mw) / 1000.0),
                temp_c: d.temperature(TemperatureSensor::Gpu).map_or(0.0, f64::from),
                sm_clock_mhz: d.clock_info(Clock::SM).unwrap_or(0),
                mem_clock_mhz: d.clock_info(Clock::Memory).unwrap_or(0),
                throttle_reasons: d.current_throttle_reasons().map_or(0, |r| r.bits()),
                ecc_dbe_total: d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile).unwrap_or(0),
                xid_last: 0,
                sm_active: None,
                tensor_active: None,
            });
        }
        out
    }
}

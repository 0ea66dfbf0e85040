//! Real GPU telemetry through NVML (`nvml-wrapper` loads `libnvidia-ml.so.1` at run time, so the agent
//! builds and runs on machines without a GPU and reports "no GPU" there).
//!
//! Beyond the basic readings:
//! - **XID errors** come from NVML's event API: one event set per GPU registered for critical XID errors,
//!   drained with a 0 ms wait at every sample; `xid_last` keeps the last XID seen on that GPU (0 = none yet).
//! - **SM active, SM occupancy and tensor active** come from GPM (Hopper and newer): two GPM samples one
//!   interval apart; the first sample of a GPU, and GPUs without GPM, report `None`.
//! - **MIG instances** are reported as devices of their own, without a protocol change: `uuid` is the MIG
//!   device's UUID (`MIG-...`), `model` its NVML name (e.g. `NVIDIA H100 80GB HBM3 MIG 1g.10gb`) and
//!   `gpu_index` is [`mig_gpu_index`]`(parent, i)` = `1000 + parent * 100 + i`, which cannot collide with a
//!   physical index. The parent GPU keeps its own row (power, temperature, clocks, ECC, XID are per board);
//!   NVML does not report utilisation, power or clocks per MIG instance, so those read 0 there.
//!
//! Every reading degrades on its own: a field NVML cannot read is 0 / `None`, never a missing GPU or node.

use std::sync::OnceLock;

use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, EventSet, GpmSample, Nvml};

use crate::protocol::GpuSample;

/// `gpu_index` of MIG instance `i` of GPU `parent` is `MIG_INDEX_BASE + parent * 100 + i`.
pub const MIG_INDEX_BASE: u32 = 1000;
/// NVML's `NVML_DEVICE_MIG_ENABLE`.
const MIG_ENABLED: u32 = 1;
/// Events drained per GPU per sample: enough for a burst, bounded so a storm cannot stall sampling.
const MAX_EVENTS_PER_SAMPLE: usize = 64;
const GPM_METRICS: [GpmMetricId; 3] = [GpmMetricId::SmUtil, GpmMetricId::SmOccupancy, GpmMetricId::AnyTensorUtil];

/// The `gpu_index` reported for MIG instance `i` of physical GPU `parent` (see the module docs).
pub fn mig_gpu_index(parent: u32, i: u32) -> u32 {
    MIG_INDEX_BASE.saturating_add(parent.saturating_mul(100)).saturating_add(i)
}

/// NVML's XID value as the protocol's `xid_last` (999, NVML's "unknown XID", stays 999).
fn xid_code(x: &XidError) -> u32 {
    match x {
        XidError::Value(v) => u32::try_from(*v).unwrap_or(u32::MAX),
        XidError::Unknown => 999,
    }
}

/// A GPM percentage as the protocol's 0..=1 fraction; `None` for NaN or a negative reading.
fn gpm_fraction(pct: f64) -> Option<f64> {
    (pct.is_finite() && pct >= 0.0).then(|| (pct / 100.0).min(1.0))
}

/// The NVML library handle, shared by the whole process. The event sets and GPM samples kept between samples
/// borrow it, so it must outlive them: it lives until the process ends (NVML is reference-counted; a second
/// [`NvmlSource`] reuses it).
fn nvml() -> Result<&'static Nvml, String> {
    static NVML: OnceLock<Nvml> = OnceLock::new();
    if let Some(n) = NVML.get() {
        return Ok(n);
    }
    // A failed init is not cached: a driver that appears later is picked up by the next attempt.
    let n = Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))?;
    Ok(NVML.get_or_init(|| n))
}

/// State kept per physical GPU between samples.
struct GpuState {
    /// Critical-XID event set; `None` where registration failed (the reason was logged at start).
    xid_events: Option<EventSet<'static>>,
    xid_last: u32,
    /// GPM is supported on this GPU.
    gpm: bool,
    gpm_prev: Option<GpmSample<'static>>,
}

/// GPM readings of one interval, as 0..=1 fractions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpmReading {
    /// Fraction of time each SM had at least one warp assigned (DCGM_FI_PROF_SM_ACTIVE).
    pub sm_active: Option<f64>,
    /// Resident warps over the theoretical maximum (DCGM_FI_PROF_SM_OCCUPANCY).
    pub sm_occupancy: Option<f64>,
    /// Fraction of time any tensor pipe was active (DCGM_FI_PROF_PIPE_TENSOR_ACTIVE).
    pub tensor_active: Option<f64>,
}

/// A sample plus what the protocol has no field for yet.
#[derive(Debug, Clone, PartialEq)]
pub struct DetailedSample {
    /// What goes on the wire.
    pub sample: GpuSample,
    /// SM occupancy, 0..=1 (no protocol field yet).
    pub sm_occupancy: Option<f64>,
    /// For a MIG instance: `(parent index, instance index)`.
    pub mig: Option<(u32, u32)>,
}

/// An initialised NVML handle.
pub struct NvmlSource {
    nvml: &'static Nvml,
    count: u32,
    gpus: Vec<GpuState>,
}

impl std::fmt::Debug for NvmlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSource")
            .field("count", &self.count)
            .field("xid_watched", &self.xid_watched())
            .field("gpm", &self.gpm_gpus())
            .finish()
    }
}

impl NvmlSource {
    /// Initialises NVML; the error says why there is no GPU telemetry (no driver, no devices). XID event
    /// registration and GPM support are checked per GPU here and logged; their absence is not an error.
    pub fn init() -> Result<Self, String> {
        let nvml = nvml()?;
        let count = nvml.device_count().map_err(|e| format!("NVML device count: {e}"))?;
        if count == 0 {
            return Err("NVML found no GPU".into());
        }
        let gpus = (0..count)
            .map(|i| match nvml.device_by_index(i) {
                Ok(d) => GpuState {
                    xid_events: xid_event_set(nvml, &d, i),
                    xid_last: 0,
                    gpm: gpm_supported(&d, i),
                    gpm_prev: None,
                },
                Err(e) => {
                    tracing::warn!(gpu = i, error = %e, "NVML device unavailable at start");
                    GpuState { xid_events: None, xid_last: 0, gpm: false, gpm_prev: None }
                }
            })
            .collect();
        let s = Self { nvml, count, gpus };
        tracing::info!(gpus = count, xid_watched = s.xid_watched(), gpm = s.gpm_gpus(), "NVML collectors");
        Ok(s)
    }

    /// Number of GPUs.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// GPUs whose critical XID errors are watched.
    pub fn xid_watched(&self) -> usize {
        self.gpus.iter().filter(|g| g.xid_events.is_some()).count()
    }

    /// GPUs with GPM (SM active, occupancy, tensor active).
    pub fn gpm_gpus(&self) -> usize {
        self.gpus.iter().filter(|g| g.gpm).count()
    }

    /// Driver version, for the log.
    pub fn driver_version(&self) -> String {
        self.nvml.sys_driver_version().unwrap_or_else(|e| format!("unknown ({e})"))
    }

    /// One sample per GPU and per MIG instance; a field NVML cannot read is reported as 0 / absent rather than
    /// failing the GPU.
    pub fn sample(&mut self, now_ms: i64) -> Vec<GpuSample> {
        self.sample_detailed(now_ms).into_iter().map(|d| d.sample).collect()
    }

    /// [`Self::sample`] with the readings the protocol has no field for yet.
    pub fn sample_detailed(&mut self, now_ms: i64) -> Vec<DetailedSample> {
        let nvml = self.nvml;
        let mut out = Vec::with_capacity(self.count as usize);
        for (i, state) in (0..self.count).zip(self.gpus.iter_mut()) {
            let d = match nvml.device_by_index(i) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(gpu = i, error = %e, "NVML device unavailable");
                    continue;
                }
            };
            drain_xid(state, i);
            let gpm = if state.gpm { gpm_reading(nvml, &d, &mut state.gpm_prev, i) } else { GpmReading::default() };
            let mut sample = basic_sample(&d, i, now_ms, &format!("GPU-index-{i}"));
            sample.xid_last = state.xid_last;
            sample.sm_active = gpm.sm_active;
            sample.tensor_active = gpm.tensor_active;
            out.push(DetailedSample { sample, sm_occupancy: gpm.sm_occupancy, mig: None });
            out.extend(mig_samples(&d, i, now_ms));
        }
        out
    }
}

/// Readings every device handle (physical or MIG) may give; each failure leaves its field at 0.
fn basic_sample(d: &Device<'_>, gpu_index: u32, now_ms: i64, fallback_uuid: &str) -> GpuSample {
    let mem = d.memory_info().ok();
    let mem_total = mem.as_ref().map_or(0, |m| m.total);
    GpuSample {
        ts_ms: now_ms,
        gpu_index,
        uuid: d.uuid().unwrap_or_else(|_| fallback_uuid.to_string()),
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
    }
}

/// MIG instances of `parent` (none when MIG is off or unsupported).
fn mig_samples(parent: &Device<'_>, parent_index: u32, now_ms: i64) -> Vec<DetailedSample> {
    match parent.mig_mode() {
        Ok(m) if m.current == MIG_ENABLED => {}
        _ => return Vec::new(),
    }
    let max = match parent.mig_device_count() {
        Ok(n) => n.min(100),
        Err(e) => {
            tracing::debug!(gpu = parent_index, error = %e, "MIG device count unavailable");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for i in 0..max {
        match parent.mig_device_by_index(i) {
            Ok(m) => {
                let index = mig_gpu_index(parent_index, i);
                let sample = basic_sample(&m, index, now_ms, &format!("MIG-index-{parent_index}-{i}"));
                // Power and temperature of a MIG handle are the board's (or unsupported): the parent row has them.
                let sample = GpuSample { power_w: 0.0, temp_c: 0.0, ..sample };
                out.push(DetailedSample { sample, sm_occupancy: None, mig: Some((parent_index, i)) });
            }
            // Slots without an instance answer NotFound.
            Err(NvmlError::NotFound) => {}
            Err(e) => tracing::debug!(gpu = parent_index, mig = i, error = %e, "MIG device unavailable"),
        }
    }
    out
}

fn xid_event_set(nvml: &'static Nvml, d: &Device<'static>, i: u32) -> Option<EventSet<'static>> {
    use nvml_wrapper::bitmasks::event::EventTypes;
    let set = match nvml.create_event_set() {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(gpu = i, error = %e, "XID events unavailable: cannot create an NVML event set");
            return None;
        }
    };
    // One set per GPU: a failed registration frees the set, which must not cost the other GPUs theirs.
    match d.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::info!(gpu = i, error = %e, "XID events unavailable on this GPU");
            None
        }
    }
}

fn drain_xid(state: &mut GpuState, i: u32) {
    let Some(set) = &state.xid_events else { return };
    for _ in 0..MAX_EVENTS_PER_SAMPLE {
        match set.wait(0) {
            Ok(ev) => {
                if let Some(x) = &ev.event_data {
                    state.xid_last = xid_code(x);
                    tracing::warn!(gpu = i, xid = state.xid_last, "GPU reported a critical XID error");
                }
            }
            Err(NvmlError::Timeout) => break,
            Err(e) => {
                tracing::debug!(gpu = i, error = %e, "XID event wait failed");
                break;
            }
        }
    }
}

fn gpm_supported(d: &Device<'_>, i: u32) -> bool {
    match d.gpm_support() {
        Ok(true) => true,
        Ok(false) => {
            let arch = d.architecture().map_or_else(|e| format!("unknown ({e})"), |a| a.to_string());
            tracing::info!(gpu = i, arch = %arch, "GPM unavailable (Hopper and newer): no SM/tensor activity");
            false
        }
        Err(e) => {
            tracing::info!(gpu = i, error = %e, "GPM unavailable: no SM/tensor activity");
            false
        }
    }
}

/// Takes a GPM sample and computes the metrics against the previous one (none on the first call).
fn gpm_reading(nvml: &'static Nvml, d: &Device<'static>, prev: &mut Option<GpmSample<'static>>, i: u32) -> GpmReading {
    let now = match d.gpm_sample() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(gpu = i, error = %e, "GPM sample failed");
            *prev = None;
            return GpmReading::default();
        }
    };
    let reading = match prev.as_ref() {
        Some(p) => match nvml_wrapper::gpm::gpm_metrics_get(nvml, p, &now, &GPM_METRICS) {
            Ok(values) => {
                let get = |k: usize| values.get(k).and_then(|r| r.as_ref().ok()).and_then(|m| gpm_fraction(m.value));
                GpmReading { sm_active: get(0), sm_occupancy: get(1), tensor_active: get(2) }
            }
            Err(e) => {
                tracing::debug!(gpu = i, error = %e, "GPM metrics failed");
                GpmReading::default()
            }
        },
        None => GpmReading::default(),
    };
    *prev = Some(now);
    reading
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_is_a_clean_unavailable_without_a_driver_and_samples_every_gpu_with_one() {
        match NvmlSource::init() {
            Err(e) => assert!(e.starts_with("NVML unavailable") || e == "NVML found no GPU", "{e}"),
            Ok(mut n) => {
                let now = 1_700_000_000_000;
                // Two samples: GPM needs a previous one.
                let _ = n.sample(now);
                std::thread::sleep(std::time::Duration::from_millis(200));
                let s = n.sample_detailed(now + 200);
                let physical = s.iter().filter(|d| d.mig.is_none()).count();
                assert!(physical <= n.count() as usize);
                for d in &s {
                    let g = &d.sample;
                    assert!(!g.uuid.is_empty());
                    assert!(g.mem_used_bytes <= g.mem_total_bytes);
                    for f in [g.sm_active, g.tensor_active, d.sm_occupancy].into_iter().flatten() {
                        assert!((0.0..=1.0).contains(&f), "{f}");
                    }
                    match d.mig {
                        Some((p, i)) => {
                            assert_eq!(g.gpu_index, mig_gpu_index(p, i));
                            assert!(g.uuid.starts_with("MIG-"), "{}", g.uuid);
                        }
                        None => assert!(g.gpu_index < MIG_INDEX_BASE),
                    }
                }
            }
        }
    }

    #[test]
    fn mig_indexes_cannot_collide_with_physical_ones() {
        assert_eq!(mig_gpu_index(0, 0), 1000);
        assert_eq!(mig_gpu_index(3, 6), 1306);
        assert_eq!(mig_gpu_index(u32::MAX, 1), u32::MAX);
    }

    #[test]
    fn xid_and_gpm_values_map_to_the_protocol() {
        assert_eq!(xid_code(&XidError::Value(79)), 79);
        assert_eq!(xid_code(&XidError::Unknown), 999);
        assert_eq!(xid_code(&XidError::Value(u64::MAX)), u32::MAX);
        assert_eq!(gpm_fraction(42.0), Some(0.42));
        assert_eq!(gpm_fraction(100.4), Some(1.0));
        assert_eq!(gpm_fraction(f64::NAN), None);
        assert_eq!(gpm_fraction(-1.0), None);
    }
}

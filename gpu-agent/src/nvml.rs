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
//!   physical index. The parent GPU keeps its own row (power, temperature, clocks, ECC, XID are per board, so
//!   a slice reports them absent). NVML's utilisation call does not work on a MIG handle; a slice's
//!   utilisation comes from GPM per GPU instance (`nvmlGpmMigSampleGet`, Hopper and newer: graphics activity
//!   as `util_pct`, SM and tensor activity as on a whole GPU) and is absent (`None`, "unknown") where GPM
//!   cannot give it (older GPUs, the first sample of a slice), never 0: a 0 would read as an idle slice.
//!
//! Every reading degrades on its own: a field NVML cannot read is absent (`None`) on the wire, never 0 (a 0
//! is indistinguishable from an idle GPU), and is counted in
//! [`AgentStats::nvml_read_failures`](crate::selfmetrics::AgentStats::nvml_read_failures) by field. A failure
//! never costs the GPU or the node its other readings.

use std::collections::HashMap;
use std::sync::OnceLock;

use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, EventSet, GpmSample, Nvml};

use crate::protocol::GpuSample;
use crate::selfmetrics::{NvmlField, NvmlReadFailures};

pub use crate::protocol::MIG_INDEX_BASE;
/// NVML's `NVML_DEVICE_MIG_ENABLE`.
const MIG_ENABLED: u32 = 1;
/// Events drained per GPU per sample: enough for a burst, bounded so a storm cannot stall sampling.
const MAX_EVENTS_PER_SAMPLE: usize = 64;
const GPM_METRICS: [GpmMetricId; 3] = [GpmMetricId::SmUtil, GpmMetricId::SmOccupancy, GpmMetricId::AnyTensorUtil];
/// GPM metrics of one MIG GPU instance: graphics activity (the instance's utilisation), SM activity, tensor
/// activity.
const GPM_MIG_METRICS: [GpmMetricId; 3] = [GpmMetricId::GraphicsUtil, GpmMetricId::SmUtil, GpmMetricId::AnyTensorUtil];

/// The readings one device handle (a physical GPU or a MIG instance) gives; NVML's [`Device`] in the agent, a
/// fake in tests (`crate::fakes::FakeDevice`), so what a failed call turns into can be checked without a GPU.
pub trait DeviceReadings {
    /// Device UUID.
    fn uuid(&self) -> Result<String, NvmlError>;
    /// Product name.
    fn name(&self) -> Result<String, NvmlError>;
    /// GPU utilisation over NVML's last sample period, percent.
    fn utilization_pct(&self) -> Result<u32, NvmlError>;
    /// Framebuffer `(used, total)`, bytes.
    fn memory_bytes(&self) -> Result<(u64, u64), NvmlError>;
    /// Board power draw, milliwatts.
    fn power_mw(&self) -> Result<u32, NvmlError>;
    /// GPU temperature, Celsius.
    fn temperature_c(&self) -> Result<u32, NvmlError>;
    /// A clock, MHz.
    fn clock_mhz(&self, clock: Clock) -> Result<u32, NvmlError>;
    /// Clock-event (throttle) reasons bitmask.
    fn throttle_reasons(&self) -> Result<u64, NvmlError>;
    /// Volatile uncorrectable ECC errors.
    fn ecc_dbe_total(&self) -> Result<u64, NvmlError>;
}

impl DeviceReadings for Device<'_> {
    fn uuid(&self) -> Result<String, NvmlError> {
        Device::uuid(self)
    }
    fn name(&self) -> Result<String, NvmlError> {
        Device::name(self)
    }
    fn utilization_pct(&self) -> Result<u32, NvmlError> {
        self.utilization_rates().map(|u| u.gpu)
    }
    fn memory_bytes(&self) -> Result<(u64, u64), NvmlError> {
        self.memory_info().map(|m| (m.used, m.total))
    }
    fn power_mw(&self) -> Result<u32, NvmlError> {
        self.power_usage()
    }
    fn temperature_c(&self) -> Result<u32, NvmlError> {
        self.temperature(TemperatureSensor::Gpu)
    }
    fn clock_mhz(&self, clock: Clock) -> Result<u32, NvmlError> {
        self.clock_info(clock)
    }
    fn throttle_reasons(&self) -> Result<u64, NvmlError> {
        self.current_throttle_reasons().map(|r| r.bits())
    }
    fn ecc_dbe_total(&self) -> Result<u64, NvmlError> {
        self.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
    }
}

/// `Some` reading, or `None` with the failure counted under `field`.
fn reading<T>(failures: &NvmlReadFailures, field: NvmlField, r: Result<T, NvmlError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            failures.record(field);
            tracing::trace!(field = field.label(), error = %e, "NVML reading failed: reported as absent");
            None
        }
    }
}

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
    /// Previous GPM sample of each MIG slot's GPU instance, as `(GPU instance id, sample)`.
    mig_gpm_prev: HashMap<u32, (u32, GpmSample<'static>)>,
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
                    mig_gpm_prev: HashMap::new(),
                },
                Err(e) => {
                    tracing::warn!(gpu = i, error = %e, "NVML device unavailable at start");
                    GpuState { xid_events: None, xid_last: 0, gpm: false, gpm_prev: None, mig_gpm_prev: HashMap::new() }
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

    /// One sample per GPU and per MIG instance; a field NVML cannot read is reported as absent (and counted in
    /// `failures`) rather than failing the GPU.
    pub fn sample(&mut self, now_ms: i64, failures: &NvmlReadFailures) -> Vec<GpuSample> {
        self.sample_detailed(now_ms, failures).into_iter().map(|d| d.sample).collect()
    }

    /// [`Self::sample`] with the readings the protocol has no field for yet.
    pub fn sample_detailed(&mut self, now_ms: i64, failures: &NvmlReadFailures) -> Vec<DetailedSample> {
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
            let mut sample = basic_sample(&d, i, now_ms, &format!("GPU-index-{i}"), failures);
            // Without an event set no XID can be seen: "none seen" would be a claim, so the reading is absent.
            sample.xid_last = state.xid_events.is_some().then_some(state.xid_last);
            sample.sm_active = gpm.sm_active;
            sample.tensor_active = gpm.tensor_active;
            out.push(DetailedSample { sample, sm_occupancy: gpm.sm_occupancy, mig: None });
            out.extend(mig_samples(nvml, &d, i, now_ms, state, failures));
        }
        out
    }
}

/// Every reading of a physical GPU; each failed one is absent and counted, the others are kept.
pub fn basic_sample(
    d: &impl DeviceReadings,
    gpu_index: u32,
    now_ms: i64,
    fallback_uuid: &str,
    failures: &NvmlReadFailures,
) -> GpuSample {
    let mem = reading(failures, NvmlField::Memory, d.memory_bytes());
    GpuSample {
        ts_ms: now_ms,
        gpu_index,
        uuid: d.uuid().unwrap_or_else(|_| fallback_uuid.to_string()),
        model: d.name().unwrap_or_default(),
        util_pct: reading(failures, NvmlField::Util, d.utilization_pct()).map(|u| f64::from(u).min(100.0)),
        mem_used_bytes: mem.map(|(used, total)| used.min(total)),
        mem_total_bytes: mem.map(|(_, total)| total),
        // NVML reports milliwatts.
        power_w: reading(failures, NvmlField::Power, d.power_mw()).map(|mw| f64::from(mw) / 1000.0),
        temp_c: reading(failures, NvmlField::Temperature, d.temperature_c()).map(f64::from),
        sm_clock_mhz: reading(failures, NvmlField::SmClock, d.clock_mhz(Clock::SM)),
        mem_clock_mhz: reading(failures, NvmlField::MemClock, d.clock_mhz(Clock::Memory)),
        throttle_reasons: reading(failures, NvmlField::ThrottleReasons, d.throttle_reasons()),
        ecc_dbe_total: reading(failures, NvmlField::Ecc, d.ecc_dbe_total()),
        xid_last: None,
        sm_active: None,
        tensor_active: None,
    }
}

/// A MIG slice's own readings: memory from its handle (a failure counted), utilisation and activity from its
/// GPU instance's GPM metrics (`gpm`, absent when GPM cannot give them). Power, temperature, clocks, throttle
/// reasons, ECC and XID are the board's, reported on the parent's row, so they are absent here (not failures).
pub fn mig_sample(
    d: &impl DeviceReadings,
    gpu_index: u32,
    now_ms: i64,
    fallback_uuid: &str,
    gpm: MigGpmReading,
    failures: &NvmlReadFailures,
) -> GpuSample {
    let mem = reading(failures, NvmlField::Memory, d.memory_bytes());
    GpuSample {
        ts_ms: now_ms,
        gpu_index,
        uuid: d.uuid().unwrap_or_else(|_| fallback_uuid.to_string()),
        model: d.name().unwrap_or_default(),
        util_pct: gpm.util_pct,
        mem_used_bytes: mem.map(|(used, total)| used.min(total)),
        mem_total_bytes: mem.map(|(_, total)| total),
        power_w: None,
        temp_c: None,
        sm_clock_mhz: None,
        mem_clock_mhz: None,
        throttle_reasons: None,
        ecc_dbe_total: None,
        xid_last: None,
        sm_active: gpm.sm_active,
        tensor_active: gpm.tensor_active,
    }
}

/// GPM readings of one MIG GPU instance over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MigGpmReading {
    /// Graphics/compute activity of the instance, percent 0..=100 (its `util_pct`).
    pub util_pct: Option<f64>,
    /// SM activity, 0..=1.
    pub sm_active: Option<f64>,
    /// Tensor-pipe activity, 0..=1.
    pub tensor_active: Option<f64>,
}

/// MIG instances of `parent` (none when MIG is off or unsupported).
fn mig_samples(
    nvml: &'static Nvml,
    parent: &Device<'static>,
    parent_index: u32,
    now_ms: i64,
    state: &mut GpuState,
    failures: &NvmlReadFailures,
) -> Vec<DetailedSample> {
    match parent.mig_mode() {
        Ok(m) if m.current == MIG_ENABLED => {}
        _ => {
            state.mig_gpm_prev.clear();
            return Vec::new();
        }
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
                let gpm = if state.gpm {
                    mig_gpm_reading(nvml, parent, &m, i, &mut state.mig_gpm_prev)
                } else {
                    MigGpmReading::default()
                };
                let sample = mig_sample(&m, index, now_ms, &format!("MIG-index-{parent_index}-{i}"), gpm, failures);
                out.push(DetailedSample { sample, sm_occupancy: None, mig: Some((parent_index, i)) });
            }
            // Slots without an instance answer NotFound.
            Err(NvmlError::NotFound) => {
                state.mig_gpm_prev.remove(&i);
            }
            Err(e) => tracing::debug!(gpu = parent_index, mig = i, error = %e, "MIG device unavailable"),
        }
    }
    out
}

/// The GPU instance id of a MIG device handle (nvml-wrapper 0.13 has no safe wrapper for
/// `nvmlDeviceGetGpuInstanceId`, so the loaded symbol is called directly).
fn gpu_instance_id(nvml: &Nvml, mig: &Device<'_>) -> Option<u32> {
    let f = nvml.lib().nvmlDeviceGetGpuInstanceId.as_ref().ok()?;
    let mut id: std::os::raw::c_uint = 0;
    // SAFETY: `mig` is a live handle from this NVML instance, and `id` is a valid out-pointer for the call.
    let ret = unsafe { f(mig.handle(), &mut id) };
    (ret == 0).then_some(id)
}

/// GPM metrics of MIG slot `slot` against its previous sample: `None` readings on the first sample, when the
/// slot now holds another GPU instance, or when GPM fails (each failure resets the slot's history).
fn mig_gpm_reading(
    nvml: &'static Nvml,
    parent: &Device<'static>,
    mig: &Device<'static>,
    slot: u32,
    prev: &mut HashMap<u32, (u32, GpmSample<'static>)>,
) -> MigGpmReading {
    let Some(gi) = gpu_instance_id(nvml, mig) else {
        prev.remove(&slot);
        return MigGpmReading::default();
    };
    let now = match parent.gpm_mig_sample(gi) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(mig = slot, error = %e, "GPM sample of a MIG instance failed: utilisation unknown");
            prev.remove(&slot);
            return MigGpmReading::default();
        }
    };
    let reading = match prev.get(&slot) {
        Some((prev_gi, p)) if *prev_gi == gi => {
            match nvml_wrapper::gpm::gpm_metrics_get(nvml, p, &now, &GPM_MIG_METRICS) {
                Ok(values) => {
                    let get =
                        |k: usize| values.get(k).and_then(|r| r.as_ref().ok()).and_then(|m| gpm_fraction(m.value));
                    MigGpmReading { util_pct: get(0).map(|f| f * 100.0), sm_active: get(1), tensor_active: get(2) }
                }
                Err(e) => {
                    tracing::debug!(mig = slot, error = %e, "GPM metrics of a MIG instance failed: utilisation unknown");
                    MigGpmReading::default()
                }
            }
        }
        _ => MigGpmReading::default(),
    };
    prev.insert(slot, (gi, now));
    reading
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
                let failures = NvmlReadFailures::default();
                let _ = n.sample(now, &failures);
                std::thread::sleep(std::time::Duration::from_millis(200));
                let s = n.sample_detailed(now + 200, &failures);
                let physical = s.iter().filter(|d| d.mig.is_none()).count();
                assert!(physical <= n.count() as usize);
                for d in &s {
                    let g = &d.sample;
                    assert!(!g.uuid.is_empty());
                    assert!(g.mem_used_bytes <= g.mem_total_bytes);
                    if let Some(u) = g.util_pct {
                        assert!((0.0..=100.0).contains(&u), "{u}");
                    }
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

    use crate::fakes::FakeDevice;

    #[test]
    fn a_healthy_device_reports_every_reading_and_counts_no_failure() {
        let failures = NvmlReadFailures::default();
        let g = basic_sample(&FakeDevice::healthy(), 0, 1, "GPU-index-0", &failures);
        assert_eq!(g.uuid, "GPU-fake-0");
        assert_eq!(g.util_pct, Some(37.0));
        assert_eq!(g.power_w, Some(312.5));
        assert_eq!((g.mem_used_bytes, g.mem_total_bytes), (Some(10 << 30), Some(80 << 30)));
        assert_eq!((g.temp_c, g.sm_clock_mhz, g.mem_clock_mhz), (Some(55.0), Some(1980), Some(2619)));
        assert_eq!((g.throttle_reasons, g.ecc_dbe_total), (Some(0), Some(0)));
        assert!(NvmlField::ALL.iter().all(|f| failures.get(*f) == 0));
    }

    #[test]
    fn failed_readings_are_absent_not_zero_and_counted_by_field() {
        let failures = NvmlReadFailures::default();
        let d =
            FakeDevice { util_pct: None, power_mw: None, memory: None, ecc_dbe_total: None, ..FakeDevice::healthy() };
        let g = basic_sample(&d, 3, 1, "GPU-index-3", &failures);
        assert_eq!(g.util_pct, None, "a failed utilisation reading is unknown, not an idle 0");
        assert_eq!(g.power_w, None);
        assert_eq!((g.mem_used_bytes, g.mem_total_bytes), (None, None));
        assert_eq!(g.ecc_dbe_total, None);
        // The readings that worked are kept.
        assert_eq!((g.temp_c, g.sm_clock_mhz), (Some(55.0), Some(1980)));
        let _ = basic_sample(&d, 3, 2, "GPU-index-3", &failures);
        for (field, n) in [
            (NvmlField::Util, 2),
            (NvmlField::Power, 2),
            (NvmlField::Memory, 2),
            (NvmlField::Ecc, 2),
            (NvmlField::Temperature, 0),
            (NvmlField::SmClock, 0),
        ] {
            assert_eq!(failures.get(field), n, "{}", field.label());
        }
        // The self-metrics page shows them under a bounded `field` label.
        let stats = crate::selfmetrics::AgentStats::default();
        stats.nvml_read_failures.record(NvmlField::Util);
        let text = stats.render().unwrap();
        assert!(text.contains(r#"fleetpilot_agent_nvml_read_failures_total{field="util"} 1"#), "{text}");
        assert!(text.contains(r#"fleetpilot_agent_nvml_read_failures_total{field="power"} 0"#), "{text}");
        // And the wire carries null, which the protocol accepts.
        let v = serde_json::to_value(&g).unwrap();
        assert!(v["util_pct"].is_null() && v["power_w"].is_null(), "{v}");
    }

    #[test]
    fn a_mig_slice_without_gpm_reports_unknown_utilisation_never_zero() {
        let failures = NvmlReadFailures::default();
        let d = FakeDevice {
            uuid: Some("MIG-fake".into()),
            name: Some("NVIDIA H100 80GB HBM3 MIG 1g.10gb".into()),
            ..FakeDevice::healthy()
        };
        let g = mig_sample(&d, mig_gpu_index(0, 1), 1, "MIG-index-0-1", MigGpmReading::default(), &failures);
        assert_eq!(g.util_pct, None);
        assert_eq!((g.power_w, g.temp_c, g.sm_clock_mhz, g.xid_last), (None, None, None, None));
        assert_eq!(g.mem_total_bytes, Some(80 << 30));
        // Board readings a slice does not have are not failures.
        assert!(NvmlField::ALL.iter().all(|f| failures.get(*f) == 0));
        let gpm = MigGpmReading { util_pct: Some(64.0), sm_active: Some(0.6), tensor_active: Some(0.3) };
        let g = mig_sample(&d, mig_gpu_index(0, 1), 2, "MIG-index-0-1", gpm, &failures);
        assert_eq!((g.util_pct, g.sm_active, g.tensor_active), (Some(64.0), Some(0.6), Some(0.3)));
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

//! Per-GPU readings from NVIDIA dcgm-exporter (`DCGM_FI_*`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::text::{Sample, Scrape};

/// The MIG GPU instance a reading belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigInstance {
    /// `GPU_I_ID`: GPU instance id within the physical GPU.
    pub instance_id: String,
    /// `GPU_I_PROFILE`, e.g. `3g.40gb`.
    pub profile: Option<String>,
}

/// Latest dcgm-exporter readings of one GPU, or of one MIG instance of it. None: not exported, or DCGM's "blank".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DcgmGpu {
    /// `gpu` label: the device index.
    pub index: Option<u32>,
    /// `UUID` label, e.g. `GPU-5b3c1a2e-…`.
    pub uuid: String,
    /// `modelName`, e.g. `NVIDIA H100 80GB HBM3`.
    pub model_name: Option<String>,
    /// `Hostname` (older exporters) or `hostname`.
    pub hostname: Option<String>,
    /// `pci_bus_id`.
    pub pci_bus_id: Option<String>,
    /// `DCGM_FI_DRIVER_VERSION` label.
    pub driver_version: Option<String>,
    /// MIG instance, for readings of one.
    pub mig: Option<MigInstance>,
    /// Kubernetes pod using the GPU (first seen, if time-sliced between several).
    pub pod: Option<String>,
    /// Namespace of `pod`.
    pub namespace: Option<String>,
    /// Container in `pod`.
    pub container: Option<String>,
    /// `DEV_GPU_UTIL`, percent.
    pub util_pct: Option<f64>,
    /// `DEV_MEM_COPY_UTIL`, percent.
    pub mem_copy_util_pct: Option<f64>,
    /// `DEV_FB_USED`, MiB.
    pub fb_used_mib: Option<f64>,
    /// `DEV_FB_FREE`, MiB.
    pub fb_free_mib: Option<f64>,
    /// `DEV_POWER_USAGE`, W.
    pub power_w: Option<f64>,
    /// `DEV_TOTAL_ENERGY_CONSUMPTION` since driver load, mJ.
    pub energy_mj: Option<f64>,
    /// `DEV_GPU_TEMP`, °C.
    pub temperature_c: Option<f64>,
    /// `DEV_MEMORY_TEMP`, °C.
    pub memory_temperature_c: Option<f64>,
    /// `DEV_SM_CLOCK`, MHz.
    pub sm_clock_mhz: Option<f64>,
    /// `DEV_MEM_CLOCK`, MHz.
    pub mem_clock_mhz: Option<f64>,
    /// `DEV_XID_ERRORS`: the last XID error code (0: none since the exporter started).
    pub xid_last: Option<u32>,
    /// `PROF_GR_ENGINE_ACTIVE`, fraction 0..1.
    pub gr_engine_active: Option<f64>,
    /// `PROF_SM_ACTIVE`, fraction 0..1.
    pub sm_active: Option<f64>,
    /// `PROF_SM_OCCUPANCY`, fraction 0..1.
    pub sm_occupancy: Option<f64>,
    /// `PROF_PIPE_TENSOR_ACTIVE`, fraction 0..1.
    pub tensor_active: Option<f64>,
    /// `PROF_DRAM_ACTIVE`, fraction 0..1.
    pub dram_active: Option<f64>,
}

/// DCGM's storage type of a field, which decides what its "blank" sentinels look like.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Float,
}

/// DCGM_INT32_BLANK (0x7ffffff0); NOT_FOUND, NOT_SUPPORTED and NOT_PERMISSIONED are the next three values.
const INT32_BLANK: f64 = 2_147_483_632.0;
/// DCGM_INT64_BLANK (0x7ffffffffffffff0) as an f64: 2^63, which its three successors round to as well, e.g. the
/// NOT_SUPPORTED value 9223372036854775794 dcgm-exporter prints.
const INT64_BLANK: f64 = 9_223_372_036_854_775_808.0;
/// DCGM_FP64_BLANK (2^47); its successors are larger.
const FP64_BLANK: f64 = 140_737_488_355_328.0;

/// Whether `v` is one of DCGM's "no value" sentinels for a field of `kind` (dcgm_structs.h `DCGM_*_IS_BLANK`).
fn is_blank(v: f64, kind: Kind) -> bool {
    if !v.is_finite() || v >= INT64_BLANK {
        return true;
    }
    match kind {
        // Exact values only: an int64 field (energy, bytes) legitimately passes 2^31.
        Kind::Int => v.fract() == 0.0 && (INT32_BLANK..=INT32_BLANK + 3.0).contains(&v),
        Kind::Float => v >= FP64_BLANK,
    }
}

/// The numeric slot a DCGM field fills, and the field's storage type.
fn slot<'a>(g: &'a mut DcgmGpu, name: &str) -> Option<(&'a mut Option<f64>, Kind)> {
    let field = name.strip_prefix("DCGM_FI_")?;
    Some(match field {
        "DEV_GPU_UTIL" => (&mut g.util_pct, Kind::Int),
        "DEV_MEM_COPY_UTIL" => (&mut g.mem_copy_util_pct, Kind::Int),
        "DEV_FB_USED" => (&mut g.fb_used_mib, Kind::Int),
        "DEV_FB_FREE" => (&mut g.fb_free_mib, Kind::Int),
        "DEV_POWER_USAGE" => (&mut g.power_w, Kind::Float),
        "DEV_TOTAL_ENERGY_CONSUMPTION" => (&mut g.energy_mj, Kind::Int),
        "DEV_GPU_TEMP" => (&mut g.temperature_c, Kind::Int),
        "DEV_MEMORY_TEMP" => (&mut g.memory_temperature_c, Kind::Int),
        "DEV_SM_CLOCK" => (&mut g.sm_clock_mhz, Kind::Int),
        "DEV_MEM_CLOCK" => (&mut g.mem_clock_mhz, Kind::Int),
        "PROF_GR_ENGINE_ACTIVE" => (&mut g.gr_engine_active, Kind::Float),
        "PROF_SM_ACTIVE" => (&mut g.sm_active, Kind::Float),
        "PROF_SM_OCCUPANCY" => (&mut g.sm_occupancy, Kind::Float),
        "PROF_PIPE_TENSOR_ACTIVE" => (&mut g.tensor_active, Kind::Float),
        "PROF_DRAM_ACTIVE" => (&mut g.dram_active, Kind::Float),
        _ => return None,
    })
}

/// One [`DcgmGpu`] per GPU (or MIG instance) in a dcgm-exporter scrape, ordered by index, UUID, MIG instance.
///
/// Readings are keyed by the `gpu`, `UUID` and `GPU_I_ID` labels; other labels (the XID's `err_code`, a pod that
/// only some series carry) do not split a GPU. Series with neither `gpu` nor `UUID` are not per-GPU and ignored.
pub fn dcgm_gpus(s: &Scrape) -> Vec<DcgmGpu> {
    let mut gpus: BTreeMap<(Option<u32>, String, String), DcgmGpu> = BTreeMap::new();
    for x in s.samples.iter().filter(|x| x.name.starts_with("DCGM_FI_")) {
        let uuid = x.label("UUID").or_else(|| x.label("uuid"));
        let index_label = x.label("gpu");
        if uuid.is_none() && index_label.is_none() {
            continue;
        }
        let index = index_label.and_then(|i| i.parse().ok());
        let uuid = uuid.unwrap_or_default();
        let mig_id = x.label("GPU_I_ID").unwrap_or_default();
        let gpu = gpus.entry((index, uuid.to_owned(), mig_id.to_owned())).or_insert_with(|| DcgmGpu {
            index,
            uuid: uuid.to_owned(),
            mig: x.label("GPU_I_ID").map(|id| MigInstance {
                instance_id: id.to_owned(),
                profile: x.label("GPU_I_PROFILE").map(str::to_owned),
            }),
            ..DcgmGpu::default()
        });
        gpu.fill_labels(x);
        gpu.record(&x.name, x.value);
    }
    gpus.into_values().collect()
}

impl DcgmGpu {
    /// Records one reading of series `name` (a `DCGM_FI_*` field) for this GPU: the field's slot takes `value`,
    /// or None where `value` is one of DCGM's "blank" sentinels; fields without a slot are ignored. Of several
    /// readings of a field, the last one recorded stays. The remote-write receiver fills GPUs through this too.
    pub fn record(&mut self, name: &str, value: f64) {
        if name == "DCGM_FI_DEV_XID_ERRORS" {
            self.xid_last = Some(value).filter(|&v| !is_blank(v, Kind::Int)).and_then(xid_code);
        } else if let Some((slot, kind)) = slot(self, name) {
            *slot = Some(value).filter(|&v| !is_blank(v, kind));
        }
    }

    /// Takes descriptive labels the GPU does not have yet from `x`.
    fn fill_labels(&mut self, x: &Sample) {
        let fill = |slot: &mut Option<String>, names: &[&str]| {
            if slot.is_none() {
                *slot = names.iter().find_map(|n| x.label(n)).map(str::to_owned);
            }
        };
        fill(&mut self.model_name, &["modelName"]);
        fill(&mut self.hostname, &["Hostname", "hostname"]);
        fill(&mut self.pci_bus_id, &["pci_bus_id"]);
        fill(&mut self.driver_version, &["DCGM_FI_DRIVER_VERSION"]);
        fill(&mut self.pod, &["pod"]);
        fill(&mut self.namespace, &["namespace"]);
        fill(&mut self.container, &["container"]);
    }
}

/// An XID reading as an error code: a whole number that fits u32.
fn xid_code(v: f64) -> Option<u32> {
    (v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v)).then_some(v as u32)
}

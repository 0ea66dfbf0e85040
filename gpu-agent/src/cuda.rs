//! Device inventory and a memory-bandwidth health probe through the CUDA driver API and NVRTC (cudarc, both
//! loaded dynamically, so nothing CUDA is needed to build). cudarc panics when `libcuda.so` or `libnvrtc.so` is
//! missing, so presence is checked first and every call is contained: "unavailable" is a normal answer.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// What CUDA tells about one device.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CudaDevice {
    /// Ordinal.
    pub ordinal: usize,
    /// Name.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Streaming multiprocessors.
    pub sm_count: i32,
    /// Device memory, bytes.
    pub total_mem_bytes: usize,
}

/// Inventory, or why there is none ("unavailable" is a normal answer, never a crash).
pub fn inventory() -> Result<Vec<CudaDevice>, String> {
    // SAFETY: only probes whether the shared library can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("CUDA unavailable: libcuda.so not found".into());
    }
    catch_unwind(AssertUnwindSafe(|| -> Result<Vec<CudaDevice>, String> {
        use cudarc::driver::CudaContext;
        use cudarc::driver::sys::CUdevice_attribute;
        let n = CudaContext::device_count().map_err(|e| format!("CUDA unavailable: {e:?}"))?;
        let mut out = Vec::new();
        for ordinal in 0..n.max(0) as usize {
            let ctx = CudaContext::new(ordinal).map_err(|e| format!("CUDA device {ordinal}: {e:?}"))?;
            out.push(CudaDevice {
                ordinal,
                name: ctx.name().unwrap_or_default(),
                compute_capability: ctx.compute_capability().unwrap_or((0, 0)),
                sm_count: ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).unwrap_or(0),
                total_mem_bytes: ctx.total_mem().unwrap_or(0),
            });
        }
        Ok(out)
    }))
    .unwrap_or_else(|_| Err("CUDA unavailable: the driver library panicked on load".into()))
}

/// Bytes the bandwidth probe copies per run (each run reads and writes this much).
pub const PROBE_BYTES: usize = 256 << 20;
/// Timed runs of the probe; the best one is reported (the others absorb clock ramp-up and co-tenants).
const PROBE_RUNS: usize = 5;
/// Free device memory the probe leaves untouched, so it never pushes a serving engine into OOM.
const PROBE_HEADROOM_BYTES: usize = 512 << 20;
/// Head of the source buffer that is filled with a pattern and checked after the copy.
const PROBE_CHECK_WORDS: usize = 1 << 20;

/// A grid-stride copy of 16-byte vectors: the simplest kernel that is bound by DRAM bandwidth alone.
const COPY_KERNEL: &str = r#"
extern "C" __global__ void fleetpilot_copy(const uint4* __restrict__ src, uint4* __restrict__ dst,
                                           unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        dst[i] = src[i];
    }
}
"#;

/// The bandwidth probe's result for one device.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProbeResult {
    /// CUDA ordinal.
    pub ordinal: usize,
    /// The device's UUID formatted as NVML and DCGM print it (`GPU-xxxxxxxx-xxxx-...`), when readable.
    pub uuid: Option<String>,
    /// Achievable device-memory bandwidth (read + write), GB/s (10^9 bytes), best of the runs.
    pub bandwidth_gb_s: Option<f64>,
    /// Why there is no bandwidth, when there is none.
    pub error: Option<String>,
}

/// Number of CUDA devices, or why CUDA cannot be used here.
pub fn device_count() -> Result<usize, String> {
    guarded(|| {
        let n = cudarc::driver::CudaContext::device_count().map_err(|e| format!("CUDA unavailable: {e:?}"))?;
        Ok(n.max(0) as usize)
    })
}

/// Measures device `ordinal`'s achievable memory bandwidth with an NVRTC-compiled copy kernel over
/// [`PROBE_BYTES`] (GB/s, best of a few runs). Takes about a second (compiling, context creation); blocking, so
/// call it from `spawn_blocking` inside async code. Errors are "unavailable" reasons, never panics.
pub fn probe_bandwidth(ordinal: usize) -> Result<f64, String> {
    // SAFETY: only probes whether the shared library can be loaded.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("CUDA probe unavailable: libnvrtc.so not found".into());
    }
    guarded(|| run_probe(ordinal))
}

/// Runs [`probe_bandwidth`] on every device; empty when CUDA is unavailable ([`device_count`] says why).
pub fn probe_all() -> Vec<ProbeResult> {
    let n = device_count().unwrap_or(0);
    (0..n)
        .map(|ordinal| {
            let uuid = device_uuid(ordinal).ok();
            match probe_bandwidth(ordinal) {
                Ok(gb_s) => ProbeResult { ordinal, uuid, bandwidth_gb_s: Some(gb_s), error: None },
                Err(e) => ProbeResult { ordinal, uuid, bandwidth_gb_s: None, error: Some(e) },
            }
        })
        .collect()
}

/// [`probe_all`] with one log line per device (or one saying why there is nothing to probe); for start-up.
pub fn log_probe_all() -> Vec<ProbeResult> {
    if let Err(e) = device_count() {
        tracing::info!(reason = %e, "CUDA bandwidth probe skipped");
        return Vec::new();
    }
    let results = probe_all();
    for r in &results {
        match (&r.bandwidth_gb_s, &r.error) {
            (Some(gb_s), _) => tracing::info!(ordinal = r.ordinal, bandwidth_gb_s = gb_s, "CUDA bandwidth probe"),
            (None, e) => tracing::warn!(ordinal = r.ordinal, reason = ?e, "CUDA bandwidth probe failed"),
        }
    }
    results
}

/// Device `ordinal`'s UUID in NVML's notation, so probe results join NVML's samples by `uuid`.
pub fn device_uuid(ordinal: usize) -> Result<String, String> {
    guarded(|| {
        let ctx = cudarc::driver::CudaContext::new(ordinal).map_err(|e| format!("CUDA device {ordinal}: {e:?}"))?;
        let id = ctx.uuid().map_err(|e| format!("CUDA device {ordinal}: uuid: {e:?}"))?;
        Ok(format_uuid(&id.bytes.map(|b| b as u8)))
    })
}

/// `GPU-` and the 16 bytes as 8-4-4-4-12 lowercase hex, as `nvidia-smi -L` prints them.
fn format_uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("GPU-{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Runs `f` only if libcuda loads, and turns a panic inside cudarc into an "unavailable" error.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    // SAFETY: only probes whether the shared library can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("CUDA unavailable: libcuda.so not found".into());
    }
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("CUDA unavailable: the driver or NVRTC library panicked on load".into()))
}

/// Bytes moved per run: every byte is read once and written once.
fn bandwidth_gb_s(bytes: usize, elapsed_ms: f32) -> Option<f64> {
    let secs = f64::from(elapsed_ms) / 1000.0;
    (secs > 0.0 && secs.is_finite()).then(|| 2.0 * bytes as f64 / secs / 1e9)
}

fn run_probe(ordinal: usize) -> Result<f64, String> {
    use cudarc::driver::sys::CUevent_flags;
    use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};

    let e =
        |what: &'static str| move |err: cudarc::driver::DriverError| format!("CUDA device {ordinal}: {what}: {err:?}");
    let ptx = cudarc::nvrtc::compile_ptx(COPY_KERNEL).map_err(|err| format!("NVRTC compile: {err:?}"))?;
    let ctx = CudaContext::new(ordinal).map_err(e("context"))?;
    let (free, _total) = ctx.mem_get_info().map_err(e("memory info"))?;
    if free < 2 * PROBE_BYTES + PROBE_HEADROOM_BYTES {
        return Err(format!(
            "CUDA device {ordinal}: probe skipped, {} MiB free is less than the {} MiB it needs plus {} MiB headroom",
            free >> 20,
            (2 * PROBE_BYTES) >> 20,
            PROBE_HEADROOM_BYTES >> 20
        ));
    }
    let module = ctx.load_module(ptx).map_err(e("load module"))?;
    let func = module.load_function("fleetpilot_copy").map_err(e("load kernel"))?;
    let stream = ctx.default_stream();
    let words = PROBE_BYTES / 4;
    let mut src = stream.alloc_zeros::<u32>(words).map_err(e("allocate"))?;
    let mut dst = stream.alloc_zeros::<u32>(words).map_err(e("allocate"))?;
    let pattern: Vec<u32> = (0..PROBE_CHECK_WORDS as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    stream.memcpy_htod(&pattern, &mut src.slice_mut(0..PROBE_CHECK_WORDS)).map_err(e("upload"))?;

    let vectors = (PROBE_BYTES / 16) as u64;
    let threads = 256u32;
    let blocks = u32::try_from(vectors.div_ceil(u64::from(threads))).unwrap_or(u32::MAX);
    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    let mut best: Option<f64> = None;
    // One untimed warm-up run (module load, clocks), then the timed ones.
    for run in 0..=PROBE_RUNS {
        let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(e("event"))?;
        let mut launch = stream.launch_builder(&func);
        launch.arg(&src).arg(&mut dst).arg(&vectors);
        // SAFETY: the kernel reads `vectors` 16-byte elements of `src` and writes as many of `dst`, both
        // PROBE_BYTES long and 256-byte aligned by cuMemAlloc.
        unsafe { launch.launch(cfg) }.map_err(e("launch"))?;
        let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(e("event"))?;
        let ms = start.elapsed_ms(&end).map_err(e("timing"))?;
        if run > 0
            && let Some(gb_s) = bandwidth_gb_s(PROBE_BYTES, ms)
        {
            best = Some(best.map_or(gb_s, |b: f64| b.max(gb_s)));
        }
    }
    let back = stream.clone_dtoh(&dst.slice(0..PROBE_CHECK_WORDS)).map_err(e("download"))?;
    if back != pattern {
        return Err(format!("CUDA device {ordinal}: the copy kernel produced wrong data (memory fault?)"));
    }
    best.ok_or_else(|| format!("CUDA device {ordinal}: no timed run produced a duration"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn inventory_never_panics() {
        // On a machine without a GPU this is an error string; with one it lists devices.
        match super::inventory() {
            Ok(devs) => assert!(devs.iter().all(|d| !d.name.is_empty())),
            Err(e) => assert!(e.contains("CUDA"), "{e}"),
        }
    }

    #[test]
    fn the_probe_is_unavailable_without_cuda_and_plausible_with_it() {
        match super::device_count() {
            Err(e) => {
                assert!(e.starts_with("CUDA unavailable"), "{e}");
                let p = super::probe_bandwidth(0).unwrap_err();
                assert!(p.contains("unavailable"), "{p}");
                assert!(super::probe_all().is_empty());
            }
            Ok(n) => {
                let all = super::probe_all();
                assert_eq!(all.len(), n);
                for r in all {
                    match (r.bandwidth_gb_s, r.error) {
                        // From a laptop GPU (~100 GB/s) to HBM3e (~8 TB/s), with margin.
                        (Some(gb_s), None) => assert!((10.0..20_000.0).contains(&gb_s), "{gb_s}"),
                        (None, Some(e)) => assert!(e.contains("CUDA") || e.contains("NVRTC"), "{e}"),
                        other => panic!("inconsistent result {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_probe_of_a_device_that_does_not_exist_is_an_error() {
        assert!(super::probe_bandwidth(10_000).is_err());
    }

    #[test]
    fn uuids_are_printed_like_nvml_prints_them() {
        let b = [0x5f, 0xd4, 0xf0, 0x87, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x70, 0x81, 0x92, 0xa3, 0xb4, 0xc5];
        assert_eq!(super::format_uuid(&b), "GPU-5fd4f087-1a2b-3c4d-5e6f-708192a3b4c5");
    }

    #[test]
    fn bandwidth_counts_the_read_and_the_write() {
        // 256 MiB copied in 0.2 ms: 2 * 268435456 B / 0.0002 s = 2684.35 GB/s.
        let gb_s = super::bandwidth_gb_s(super::PROBE_BYTES, 0.2).unwrap_or_default();
        assert!((gb_s - 2_684.354_56).abs() < 1e-3, "{gb_s}");
        assert_eq!(super::bandwidth_gb_s(super::PROBE_BYTES, 0.0), None);
    }
}

//! Device inventory through the CUDA driver API (cudarc, loaded dynamically). cudarc panics when
//! `libcuda.so` is missing, so presence is checked first and every call is contained.

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
}

//! Group GPUs by workload profile with `linfa-clustering` KMeans.
//!
//! Pipeline: impute non-finite values (column mean) → standardise each feature with a floored scale
//! ([`SCALE_FLOOR`]; constant columns drop out) → for k in `2..=min(max_k, 8, n/2, distinct points)` fit
//! seeded KMeans++ on a deterministic sample of at most [`SAMPLE_SIZE`] profiles and score it with the exact
//! silhouette on that sample → keep the best k, or k = 1 when even the best silhouette is under
//! [`MIN_SILHOUETTE`] (no substantial structure: one workload) → refit on all profiles starting from the
//! sample's centroids → order clusters by mean utilisation and describe each in words from its centroid.
//!
//! Profiles are per GPU ([`profile_from_series`]) or per node ([`GpuProfile::mean_of`] its GPUs): the
//! server groups nodes, so that a node's GPUs are compared with peers doing the same kind of work.
//!
//! Deterministic for a given input and seed. Pure code: no IO, no panics on any input.

use std::collections::HashSet;

use linfa::DatasetBase;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Largest k ever considered.
pub const MAX_K: usize = 8;
/// Points used for choosing k and for the silhouette (exact O(m²) silhouette on the sample).
pub const SAMPLE_SIZE: usize = 1000;
/// KMeans++ restarts per candidate k.
pub const N_RUNS: usize = 3;
/// Lloyd iteration cap per KMeans run on the sample (structured data converges in far fewer).
pub const MAX_ITER_SAMPLE: u64 = 100;
/// Lloyd iteration cap for the warm-started refit on all GPUs.
pub const MAX_ITER_REFIT: u64 = 50;
/// Minimum scale used when standardising (features are fractions: 0.05 = 5 percentage points). Differences
/// much smaller than this are treated as noise rather than structure.
pub const SCALE_FLOOR: f64 = 0.05;
/// Mean silhouette a k >= 2 clustering needs to be preferred over one group. Kaufman & Rousseeuw read
/// 0.51-0.70 as "a reasonable structure" and 0.26-0.50 as "weak, could be artificial"; k-means splits even a
/// single blob of noise with a silhouette of 0.2-0.4.
pub const MIN_SILHOUETTE: f64 = 0.5;
const N_FEATURES: usize = 6;

/// Workload profile of one GPU over a window. All fields are fractions in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuProfile {
    /// Mean GPU utilisation.
    pub mean_util: f64,
    /// p95 GPU utilisation.
    pub p95_util: f64,
    /// Mean framebuffer memory used / total.
    pub mean_mem_frac: f64,
    /// Mean power draw / power limit.
    pub mean_power_frac: f64,
    /// Standard deviation of utilisation (variability).
    pub util_std: f64,
    /// Mean SM-active (DCGM `DCGM_FI_PROF_SM_ACTIVE`).
    pub sm_active_mean: f64,
}

impl GpuProfile {
    fn to_array(self) -> [f64; N_FEATURES] {
        [self.mean_util, self.p95_util, self.mean_mem_frac, self.mean_power_frac, self.util_std, self.sm_active_mean]
    }

    fn from_slice(v: &[f64]) -> Self {
        let g = |i: usize| v.get(i).copied().unwrap_or(0.0);
        GpuProfile {
            mean_util: g(0),
            p95_util: g(1),
            mean_mem_frac: g(2),
            mean_power_frac: g(3),
            util_std: g(4),
            sm_active_mean: g(5),
        }
    }
}

impl GpuProfile {
    /// The mean of several profiles, field by field over the finite values (NaN where none is): a node's
    /// profile from its GPUs'.
    pub fn mean_of(profiles: &[GpuProfile]) -> GpuProfile {
        let mut acc = [(0.0, 0usize); N_FEATURES];
        for p in profiles {
            for (a, v) in acc.iter_mut().zip(p.to_array()) {
                if v.is_finite() {
                    *a = (a.0 + v, a.1 + 1);
                }
            }
        }
        let means: Vec<f64> = acc.iter().map(|(s, n)| if *n > 0 { s / *n as f64 } else { f64::NAN }).collect();
        GpuProfile::from_slice(&means)
    }
}

/// Board power (W) of a GPU model by a case-insensitive substring of its name (the longest match wins), for
/// the power fraction when the agent does not report the limit.
pub fn board_power_w(model: &str) -> Option<f64> {
    const TABLE: [(&str, f64); 9] = [
        ("H200", 700.0),
        ("H100", 700.0),
        ("B200", 1000.0),
        ("A100", 400.0),
        ("L40S", 350.0),
        ("L40", 300.0),
        ("A10", 150.0),
        ("L4", 72.0),
        ("T4", 70.0),
    ];
    let m = model.to_ascii_uppercase();
    TABLE.iter().filter(|(k, _)| m.contains(k)).max_by_key(|(k, _)| k.len()).map(|(_, w)| *w)
}

/// A GPU's profile over a window from its per-bucket series: utilisation in percent, SM-active as a
/// fraction (NaN where not reported), memory used in bytes of `mem_total_bytes`, power in W of
/// `power_ref_w`. Non-finite values are skipped; a feature with no data (or no valid reference) is NaN and
/// is imputed by [`cluster_profiles`].
pub fn profile_from_series(
    util_pct: &[f64],
    sm_active: &[f64],
    mem_used_bytes: &[f64],
    mem_total_bytes: f64,
    power_w: &[f64],
    power_ref_w: f64,
) -> GpuProfile {
    let finite = |xs: &[f64]| -> Vec<f64> { xs.iter().copied().filter(|x| x.is_finite()).collect() };
    let mean = |xs: &[f64]| if xs.is_empty() { f64::NAN } else { xs.iter().sum::<f64>() / xs.len() as f64 };
    let mut util: Vec<f64> = finite(util_pct).into_iter().map(|u| (u / 100.0).clamp(0.0, 1.0)).collect();
    let mean_util = mean(&util);
    let util_std = if util.is_empty() {
        f64::NAN
    } else {
        (util.iter().map(|u| (u - mean_util) * (u - mean_util)).sum::<f64>() / util.len() as f64).sqrt()
    };
    util.sort_by(f64::total_cmp);
    // Nearest-rank p95.
    let p95_util = match util.len() {
        0 => f64::NAN,
        n => util[((0.95 * n as f64).ceil() as usize).clamp(1, n) - 1],
    };
    let frac = |xs: &[f64], total: f64| {
        if total.is_finite() && total > 0.0 { (mean(&finite(xs)) / total).clamp(0.0, 1.0) } else { f64::NAN }
    };
    let sm: Vec<f64> = finite(sm_active).into_iter().map(|x| x.clamp(0.0, 1.0)).collect();
    GpuProfile {
        mean_util,
        p95_util,
        mean_mem_frac: frac(mem_used_bytes, mem_total_bytes),
        mean_power_frac: frac(power_w, power_ref_w),
        util_std,
        sm_active_mean: mean(&sm),
    }
}

/// Coarse category of a cluster, derived from its centroid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// No utilisation, little memory.
    Idle,
    /// Memory held (model loaded) but no compute: no traffic.
    MemoryOnly,
    /// Some steady work, under 40 % utilisation.
    Light,
    /// Steady work, 40-85 % utilisation.
    Busy,
    /// Large swings in utilisation.
    Bursty,
    /// Utilisation pinned near 100 %.
    Saturated,
}

impl WorkloadKind {
    /// The kind's name (`idle`, `memory-only`, `light`, `busy`, `bursty`, `saturated`).
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Idle => "idle",
            WorkloadKind::MemoryOnly => "memory-only",
            WorkloadKind::Light => "light",
            WorkloadKind::Busy => "busy",
            WorkloadKind::Bursty => "bursty",
            WorkloadKind::Saturated => "saturated",
        }
    }

    fn classify(c: &GpuProfile) -> Self {
        if c.mean_util < 0.05 {
            if c.mean_mem_frac >= 0.10 { WorkloadKind::MemoryOnly } else { WorkloadKind::Idle }
        } else if c.mean_util >= 0.85 || (c.p95_util >= 0.95 && c.mean_util >= 0.70) {
            WorkloadKind::Saturated
        } else if c.util_std >= 0.25 || c.p95_util - c.mean_util >= 0.40 {
            WorkloadKind::Bursty
        } else if c.mean_util < 0.40 {
            WorkloadKind::Light
        } else {
            WorkloadKind::Busy
        }
    }
}

/// The grouping of a set of profiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clustering {
    /// Number of (non-empty) clusters.
    pub k: usize,
    /// Cluster index per input profile, in input order. Clusters are ordered by mean utilisation.
    pub assignments: Vec<usize>,
    /// Cluster means in original units (fractions), after imputation.
    pub centroids: Vec<GpuProfile>,
    /// GPUs per cluster.
    pub sizes: Vec<usize>,
    /// Mean silhouette of the final clustering (on the sample; 0 when k == 1).
    pub silhouette: f64,
    /// Silhouette of each candidate k that was evaluated (on the sample), for explainability.
    pub silhouette_by_k: Vec<(usize, f64)>,
    /// Coarse category per cluster, from its centroid.
    pub kinds: Vec<WorkloadKind>,
    /// Human-readable description per cluster, with its size (`... [12 GPUs]`).
    pub labels: Vec<String>,
    /// The same descriptions without the size, for callers that count in other units (nodes).
    pub descriptions: Vec<String>,
    /// Non-finite feature values replaced by their column mean.
    pub imputed_values: usize,
}

/// Cluster profiles by workload; `k` is chosen by silhouette in `2..=min(max_k, 8, n/2)`.
///
/// Returns a single cluster when there are fewer than two distinct profiles, fewer than four profiles,
/// `max_k < 2`, or when no k reaches a silhouette of [`MIN_SILHOUETTE`].
pub fn cluster_profiles(profiles: &[GpuProfile], max_k: usize, seed: u64) -> Result<Clustering, Error> {
    let n = profiles.len();
    if n == 0 {
        return Err(Error::TooShort { len: 0, need: 1 });
    }

    // Raw matrix with column-mean imputation of non-finite values.
    let mut raw = Array2::<f64>::zeros((n, N_FEATURES));
    for (i, p) in profiles.iter().enumerate() {
        for (j, v) in p.to_array().into_iter().enumerate() {
            raw[[i, j]] = v;
        }
    }
    let mut imputed_values = 0;
    for mut col in raw.columns_mut() {
        let (sum, cnt) = col.iter().filter(|v| v.is_finite()).fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
        let fill = if cnt > 0 { sum / cnt as f64 } else { 0.0 };
        for v in col.iter_mut().filter(|v| !v.is_finite()) {
            *v = fill;
            imputed_values += 1;
        }
    }
    // A finite sum of finite values can still overflow to inf; clamp so standardisation stays finite.
    raw.mapv_inplace(|v| if v.is_finite() { v.clamp(-1e150, 1e150) } else { 0.0 });

    // Standardise with a floored scale: a feature that barely varies across the fleet (e.g. util σ of
    // 1-3 points everywhere) would otherwise be blown up to unit variance and its noise would dominate.
    // Constant columns become 0 and carry no weight.
    let mut z = raw.clone();
    for mut col in z.columns_mut() {
        let mean = col.sum() / n as f64;
        let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let scale = var.sqrt().max(SCALE_FLOOR);
        if scale.is_finite() {
            col.mapv_inplace(|v| (v - mean) / scale);
        } else {
            col.fill(0.0);
        }
    }

    // Deterministic sample for k selection and silhouette.
    let mut rng = Xoshiro256Plus::seed_from_u64(seed);
    let sample_idx: Vec<usize> = if n <= SAMPLE_SIZE {
        (0..n).collect()
    } else {
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..SAMPLE_SIZE {
            let j = i + (rng.next_u64() % (n - i) as u64) as usize;
            idx.swap(i, j);
        }
        idx.truncate(SAMPLE_SIZE);
        idx.sort_unstable();
        idx
    };
    let zs = z.select(Axis(0), &sample_idx);
    let m = zs.nrows();
    let distinct = count_distinct(zs.view(), MAX_K + 1);
    // At most n/2 clusters: two profiles per cluster on average, so that a group is a group.
    let k_hi = max_k.min(MAX_K).min(m / 2).min(distinct);

    if k_hi < 2 {
        return Ok(finish(&raw, vec![0; n], 0.0, Vec::new(), imputed_values));
    }

    let dist = pairwise_distances(zs.view());
    let sample_ds = DatasetBase::from(zs.clone());
    let mut best: Option<(usize, f64, Array2<f64>, Array1<usize>)> = None;
    let mut silhouette_by_k = Vec::new();
    let mut last_err = None;
    for k in 2..=k_hi {
        let rng = Xoshiro256Plus::seed_from_u64(seed.wrapping_add(k as u64));
        let params = KMeans::params_with_rng(k, rng).n_runs(N_RUNS).max_n_iterations(MAX_ITER_SAMPLE);
        let model = match linfa::traits::Fit::fit(&params, &sample_ds) {
            Ok(model) => model,
            Err(e) => {
                last_err = Some(e.to_string());
                continue;
            }
        };
        let labels: Array1<usize> = linfa::traits::Predict::predict(&model, &zs);
        let s = silhouette(&dist, labels.as_slice().unwrap_or(&[]), k, m);
        silhouette_by_k.push((k, s));
        if best.as_ref().is_none_or(|b| s > b.1) {
            best = Some((k, s, model.centroids().clone(), labels));
        }
    }
    let Some((k, s_sample, centroids, sample_labels)) = best else {
        return Err(Error::Model(format!("kmeans: {}", last_err.unwrap_or_else(|| "no candidate k succeeded".into()))));
    };
    if s_sample < MIN_SILHOUETTE {
        return Ok(finish(&raw, vec![0; n], 0.0, silhouette_by_k, imputed_values));
    }

    // Refit on everything, warm-started from the sample centroids (the sample is everything when n is small).
    let assignments: Vec<usize> = if m == n {
        sample_labels.to_vec()
    } else {
        let rng = Xoshiro256Plus::seed_from_u64(seed);
        let params = KMeans::params_with_rng(k, rng)
            .n_runs(1)
            .max_n_iterations(MAX_ITER_REFIT)
            .init_method(KMeansInit::Precomputed(centroids));
        let full_ds = DatasetBase::from(z.clone());
        let model = linfa::traits::Fit::fit(&params, &full_ds).map_err(|e| Error::Model(format!("kmeans: {e}")))?;
        let labels: Array1<usize> = linfa::traits::Predict::predict(&model, &z);
        labels.to_vec()
    };

    let mut result = finish(&raw, assignments, s_sample, silhouette_by_k, imputed_values);
    if m != n {
        // Silhouette of the final (full-data) assignment, measured on the sample.
        let labels: Vec<usize> = sample_idx.iter().map(|&i| result.assignments.get(i).copied().unwrap_or(0)).collect();
        result.silhouette = silhouette(&dist, &labels, result.k, m);
    }
    Ok(result)
}

/// Drop empty clusters, order by (mean util, mean memory), compute centroids in original units and labels.
fn finish(
    raw: &Array2<f64>,
    assignments: Vec<usize>,
    silhouette: f64,
    silhouette_by_k: Vec<(usize, f64)>,
    imputed_values: usize,
) -> Clustering {
    let k_raw = assignments.iter().copied().max().map_or(1, |x| x + 1);
    let mut sums = vec![[0.0; N_FEATURES]; k_raw];
    let mut sizes = vec![0usize; k_raw];
    for (row, &c) in raw.rows().into_iter().zip(&assignments) {
        if let (Some(s), Some(cnt)) = (sums.get_mut(c), sizes.get_mut(c)) {
            for (acc, v) in s.iter_mut().zip(row.iter()) {
                *acc += v;
            }
            *cnt += 1;
        }
    }
    let mut clusters: Vec<(usize, GpuProfile, usize)> = sums
        .iter()
        .zip(&sizes)
        .enumerate()
        .filter(|(_, (_, cnt))| **cnt > 0)
        .map(|(i, (s, &cnt))| {
            let mean: Vec<f64> = s.iter().map(|v| v / cnt as f64).collect();
            (i, GpuProfile::from_slice(&mean), cnt)
        })
        .collect();
    clusters.sort_by(|a, b| {
        a.1.mean_util
            .total_cmp(&b.1.mean_util)
            .then(a.1.mean_mem_frac.total_cmp(&b.1.mean_mem_frac))
            .then(a.0.cmp(&b.0))
    });
    let mut remap = vec![0usize; k_raw];
    for (new, (old, _, _)) in clusters.iter().enumerate() {
        if let Some(r) = remap.get_mut(*old) {
            *r = new;
        }
    }
    let assignments = assignments.iter().map(|&c| remap.get(c).copied().unwrap_or(0)).collect();
    let centroids: Vec<GpuProfile> = clusters.iter().map(|c| c.1).collect();
    let sizes: Vec<usize> = clusters.iter().map(|c| c.2).collect();
    let kinds: Vec<WorkloadKind> = centroids.iter().map(WorkloadKind::classify).collect();
    let descriptions: Vec<String> = centroids.iter().zip(&kinds).map(|(c, kind)| describe(c, *kind)).collect();
    let labels = descriptions
        .iter()
        .zip(&sizes)
        .map(|(d, &size)| if size == 1 { format!("{d} [1 GPU]") } else { format!("{d} [{size} GPUs]") })
        .collect();
    Clustering {
        k: centroids.len(),
        assignments,
        centroids,
        sizes,
        silhouette: if clusters.len() > 1 { silhouette } else { 0.0 },
        silhouette_by_k,
        kinds,
        labels,
        descriptions,
        imputed_values,
    }
}

fn pct(x: f64) -> f64 {
    (x * 100.0).round()
}

fn describe(c: &GpuProfile, kind: WorkloadKind) -> String {
    let mut s = match kind {
        WorkloadKind::MemoryOnly => format!(
            "memory-only: model loaded, no traffic (util ~{}%, memory {}%, power {}%)",
            pct(c.mean_util),
            pct(c.mean_mem_frac),
            pct(c.mean_power_frac)
        ),
        WorkloadKind::Idle => {
            format!(
                "idle: util ~{}%, memory {}%, power {}%",
                pct(c.mean_util),
                pct(c.mean_mem_frac),
                pct(c.mean_power_frac)
            )
        }
        _ => format!(
            "{}: util ~{}% (p95 {}%, σ {}%), memory {}%, power {}%",
            kind.name(),
            pct(c.mean_util),
            pct(c.p95_util),
            pct(c.util_std),
            pct(c.mean_mem_frac),
            pct(c.mean_power_frac)
        ),
    };
    // SM-active 0 means "not reported" (imputed as 0 when no GPU reports it), not "no SM busy".
    if c.mean_util >= 0.30 && c.sm_active_mean > 0.0 && c.sm_active_mean < 0.5 * c.mean_util {
        s.push_str(&format!(
            "; SM-active only {}%: kernels leave SMs idle (small batches or memory-bound)",
            pct(c.sm_active_mean)
        ));
    }
    s
}

/// Number of distinct rows, counting at most `cap` (early exit).
fn count_distinct(x: ArrayView2<f64>, cap: usize) -> usize {
    let mut seen: HashSet<Vec<u64>> = HashSet::new();
    for row in x.rows() {
        // +0.0 normalises -0.0 so both hash alike.
        seen.insert(row.iter().map(|v| (v + 0.0).to_bits()).collect());
        if seen.len() >= cap {
            break;
        }
    }
    seen.len()
}

/// Dense symmetric Euclidean distance matrix (row-major, m × m).
fn pairwise_distances(x: ArrayView2<f64>) -> Vec<f64> {
    let m = x.nrows();
    let rows: Vec<Vec<f64>> = x.rows().into_iter().map(|r| r.to_vec()).collect();
    let mut d = vec![0.0; m * m];
    for i in 0..m {
        for j in (i + 1)..m {
            let dij = rows[i].iter().zip(&rows[j]).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
            d[i * m + j] = dij;
            d[j * m + i] = dij;
        }
    }
    d
}

/// Mean silhouette; points in singleton clusters score 0 (Rousseeuw's convention).
fn silhouette(dist: &[f64], labels: &[usize], k: usize, m: usize) -> f64 {
    if m == 0 || labels.len() != m || dist.len() != m * m {
        return 0.0;
    }
    let k = k.max(labels.iter().copied().max().map_or(0, |x| x + 1));
    let mut counts = vec![0usize; k];
    for &l in labels {
        counts[l] += 1;
    }
    if counts.iter().filter(|&&c| c > 0).count() < 2 {
        return 0.0;
    }
    let mut sums = vec![0.0; k];
    let mut total = 0.0;
    for (i, &li) in labels.iter().enumerate() {
        sums.fill(0.0);
        for (&lj, &d) in labels.iter().zip(&dist[i * m..(i + 1) * m]) {
            sums[lj] += d;
        }
        if counts[li] <= 1 {
            continue;
        }
        let a = sums[li] / (counts[li] - 1) as f64;
        let b = (0..k)
            .filter(|&c| c != li && counts[c] > 0)
            .map(|c| sums[c] / counts[c] as f64)
            .fold(f64::INFINITY, f64::min);
        let denom = a.max(b);
        if denom > 0.0 && denom.is_finite() {
            total += (b - a) / denom;
        }
    }
    total / m as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(state: &mut u64) -> f64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn around(c: GpuProfile, amp: f64, s: &mut u64) -> GpuProfile {
        let v: Vec<f64> = c.to_array().iter().map(|x| (x + amp * noise(s)).clamp(0.0, 1.0)).collect();
        GpuProfile::from_slice(&v)
    }

    const IDLE: GpuProfile = GpuProfile {
        mean_util: 0.02,
        p95_util: 0.04,
        mean_mem_frac: 0.03,
        mean_power_frac: 0.15,
        util_std: 0.01,
        sm_active_mean: 0.01,
    };
    const MEM_ONLY: GpuProfile = GpuProfile {
        mean_util: 0.01,
        p95_util: 0.03,
        mean_mem_frac: 0.85,
        mean_power_frac: 0.20,
        util_std: 0.01,
        sm_active_mean: 0.01,
    };
    const SATURATED: GpuProfile = GpuProfile {
        mean_util: 0.95,
        p95_util: 0.99,
        mean_mem_frac: 0.90,
        mean_power_frac: 0.92,
        util_std: 0.03,
        sm_active_mean: 0.80,
    };

    /// Three groups interleaved (so order carries no information); returns profiles and true group ids.
    fn three_groups(per_group: usize) -> (Vec<GpuProfile>, Vec<usize>) {
        let mut s = 0x1234_5678_9ABC_DEF1;
        let centers = [IDLE, MEM_ONLY, SATURATED];
        let mut out = Vec::new();
        let mut truth = Vec::new();
        for i in 0..per_group * 3 {
            let g = (i * 7 + i / 3) % 3;
            out.push(around(centers[g], 0.02, &mut s));
            truth.push(g);
        }
        (out, truth)
    }

    fn same_partition(a: &[usize], b: &[usize]) -> bool {
        let mut map = std::collections::HashMap::new();
        let mut back = std::collections::HashMap::new();
        a.iter().zip(b).all(|(x, y)| *map.entry(x).or_insert(y) == y && *back.entry(y).or_insert(x) == x)
    }

    #[test]
    fn recovers_three_groups() {
        let (profiles, truth) = three_groups(40);
        let c = cluster_profiles(&profiles, 8, 7).unwrap();
        assert_eq!(c.k, 3, "{:?}", c.silhouette_by_k);
        assert!(same_partition(&c.assignments, &truth));
        assert!(c.silhouette > 0.8, "silhouette {}", c.silhouette);
        assert_eq!(c.sizes, vec![40, 40, 40]);
        // Ordered by mean util: memory-only (1%), idle (2%), saturated (95%).
        assert_eq!(c.kinds, vec![WorkloadKind::MemoryOnly, WorkloadKind::Idle, WorkloadKind::Saturated]);
        assert!(c.labels[0].starts_with("memory-only: model loaded, no traffic"), "{}", c.labels[0]);
        assert!(c.labels[1].starts_with("idle: util ~2%"), "{}", c.labels[1]);
        assert!(c.labels[2].starts_with("saturated"), "{}", c.labels[2]);
        assert!((c.centroids[2].mean_util - 0.95).abs() < 0.01);
        assert!((c.centroids[0].mean_mem_frac - 0.85).abs() < 0.01);
    }

    #[test]
    fn recovers_three_groups_large_sampled() {
        let (profiles, truth) = three_groups(1500);
        let c = cluster_profiles(&profiles, 8, 3).unwrap();
        assert_eq!(c.k, 3);
        assert!(same_partition(&c.assignments, &truth));
        assert_eq!(c.sizes.iter().sum::<usize>(), 4500);
    }

    #[test]
    fn deterministic() {
        let (profiles, _) = three_groups(30);
        let a = cluster_profiles(&profiles, 6, 42).unwrap();
        let b = cluster_profiles(&profiles, 6, 42).unwrap();
        assert_eq!(a, b);
        // Cluster order does not depend on the seed either.
        let c = cluster_profiles(&profiles, 6, 4242).unwrap();
        assert_eq!(a.assignments, c.assignments);
        let (big, _) = three_groups(1200);
        assert_eq!(cluster_profiles(&big, 8, 1).unwrap(), cluster_profiles(&big, 8, 1).unwrap());
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(cluster_profiles(&[], 8, 0), Err(Error::TooShort { len: 0, need: 1 }));
        let one = cluster_profiles(&[SATURATED], 8, 0).unwrap();
        assert_eq!((one.k, one.assignments.clone(), one.silhouette), (1, vec![0], 0.0));
        assert!(one.labels[0].starts_with("saturated") && one.labels[0].ends_with("[1 GPU]"), "{}", one.labels[0]);
        let same = cluster_profiles(&vec![IDLE; 50], 8, 0).unwrap();
        assert_eq!((same.k, same.sizes.clone()), (1, vec![50]));
        let two = cluster_profiles(&[IDLE, SATURATED], 8, 0).unwrap();
        assert_eq!(two.k, 1, "k range 2..=n/2 is empty for n = 2");
        let three = cluster_profiles(&[IDLE, MEM_ONLY, SATURATED], 8, 0).unwrap();
        assert_eq!(three.k, 1, "three profiles cannot make two groups of two");
        // Two distinct values among many points: k capped at 2.
        let mut mix = vec![IDLE; 10];
        mix.extend(vec![SATURATED; 10]);
        let c = cluster_profiles(&mix, 8, 0).unwrap();
        assert_eq!(c.k, 2);
        assert!((c.silhouette - 1.0).abs() < 1e-12);
        // max_k below 2.
        let (profiles, _) = three_groups(10);
        assert_eq!(cluster_profiles(&profiles, 0, 0).unwrap().k, 1);
        assert_eq!(cluster_profiles(&profiles, 1, 0).unwrap().k, 1);
    }

    #[test]
    fn nan_and_extreme_values_do_not_panic() {
        let (mut profiles, truth) = three_groups(20);
        profiles[0].mean_util = f64::NAN;
        profiles[1].p95_util = f64::INFINITY;
        profiles[2].sm_active_mean = f64::NEG_INFINITY;
        let c = cluster_profiles(&profiles, 8, 0).unwrap();
        assert_eq!(c.imputed_values, 3);
        assert_eq!(c.assignments.len(), 60);
        assert!(c.centroids.iter().all(|p| p.to_array().iter().all(|v| v.is_finite())));
        // All values NaN in every column.
        let nan = GpuProfile::from_slice(&[f64::NAN; 6]);
        let c = cluster_profiles(&vec![nan; 5], 8, 0).unwrap();
        assert_eq!(c.k, 1);
        // Huge magnitudes.
        let huge: Vec<GpuProfile> = (0..10)
            .map(|i| GpuProfile::from_slice(&[f64::MAX / (i + 1) as f64, -f64::MAX, 1e-300, 0.0, 1.0, 2.0]))
            .collect();
        let _ = cluster_profiles(&huge, 8, 0);
        // Features in percent instead of fractions still cluster (labels just look odd).
        let pcts: Vec<GpuProfile> = truth
            .iter()
            .map(|&g| {
                let base = [IDLE, MEM_ONLY, SATURATED][g];
                GpuProfile::from_slice(&base.to_array().map(|v| v * 100.0))
            })
            .collect();
        assert_eq!(cluster_profiles(&pcts, 8, 0).unwrap().k, 3);
    }

    #[test]
    fn a_single_noisy_workload_is_one_group() {
        let mut s = 0xDEAD_BEEF_u64;
        let busy = GpuProfile {
            mean_util: 0.6,
            p95_util: 0.75,
            mean_mem_frac: 0.7,
            mean_power_frac: 0.6,
            util_std: 0.08,
            sm_active_mean: 0.5,
        };
        let fleet: Vec<GpuProfile> = (0..64).map(|_| around(busy, 0.03, &mut s)).collect();
        let c = cluster_profiles(&fleet, 8, 11).unwrap();
        assert_eq!(c.k, 1, "silhouettes {:?}", c.silhouette_by_k);
        assert!(c.silhouette_by_k.iter().all(|(_, s)| *s < MIN_SILHOUETTE), "{:?}", c.silhouette_by_k);
        assert_eq!(c.kinds, vec![WorkloadKind::Busy]);
        assert!(c.labels[0].starts_with("busy: util ~60%") && c.labels[0].ends_with("[64 GPUs]"), "{}", c.labels[0]);
        // The same fleet plus a clearly different group of a dozen is two groups again.
        let mut two = fleet.clone();
        two.extend((0..12).map(|_| around(IDLE, 0.01, &mut s)));
        let c = cluster_profiles(&two, 8, 11).unwrap();
        assert_eq!(c.k, 2, "{:?}", c.silhouette_by_k);
        assert_eq!(c.sizes, vec![12, 64]);
    }

    #[test]
    fn profiles_from_series_are_fractions_of_their_references() {
        let gib = 1024.0 * 1024.0 * 1024.0;
        let util: Vec<f64> = (1..=20).map(|i| i as f64 * 5.0).chain([f64::NAN]).collect();
        let p = profile_from_series(
            &util,
            &[f64::NAN; 21],
            &[40.0 * gib, 40.0 * gib, f64::NAN],
            80.0 * gib,
            &[350.0],
            700.0,
        );
        assert!((p.mean_util - 0.525).abs() < 1e-12, "{p:?}");
        assert_eq!(p.p95_util, 0.95, "nearest rank: the 19th of 20");
        assert_eq!(p.mean_mem_frac, 0.5);
        assert_eq!(p.mean_power_frac, 0.5);
        assert!((p.util_std - 0.288_314_065_2).abs() < 1e-9, "{}", p.util_std);
        assert!(p.sm_active_mean.is_nan(), "not reported stays unknown (imputed later)");
        // No data and no references: NaN, never a panic or a division by zero.
        let empty = profile_from_series(&[], &[], &[], 0.0, &[], f64::NAN);
        assert!(empty.to_array().iter().all(|v| v.is_nan()), "{empty:?}");
        // Out-of-range readings are clamped into [0, 1].
        let odd = profile_from_series(&[250.0, -5.0], &[2.0], &[10.0], 5.0, &[900.0], 700.0);
        assert_eq!((odd.mean_util, odd.sm_active_mean, odd.mean_mem_frac, odd.mean_power_frac), (0.5, 1.0, 1.0, 1.0));
    }

    #[test]
    fn node_profiles_average_their_gpus_and_board_power_matches_the_longest_name() {
        let m = GpuProfile::mean_of(&[IDLE, SATURATED, GpuProfile { mean_util: f64::NAN, ..IDLE }]);
        assert!((m.mean_util - (0.02 + 0.95) / 2.0).abs() < 1e-12, "NaN skipped");
        assert!((m.mean_mem_frac - (0.03 + 0.90 + 0.03) / 3.0).abs() < 1e-12);
        assert!(GpuProfile::mean_of(&[]).mean_util.is_nan());
        assert_eq!(board_power_w("NVIDIA H100 80GB HBM3"), Some(700.0));
        assert_eq!(board_power_w("NVIDIA L40S"), Some(350.0), "L40S, not L40 or L4");
        assert_eq!(board_power_w("nvidia l4"), Some(72.0));
        assert_eq!(board_power_w("Radeon"), None);
    }

    #[test]
    fn labels_cover_kinds() {
        let bursty = GpuProfile { mean_util: 0.35, p95_util: 0.9, util_std: 0.3, sm_active_mean: 0.1, ..IDLE };
        assert_eq!(WorkloadKind::classify(&bursty), WorkloadKind::Bursty);
        let d = describe(&bursty, WorkloadKind::Bursty);
        assert!(
            d.starts_with("bursty: util ~35% (p95 90%")
                && d.ends_with("SM-active only 10%: kernels leave SMs idle (small batches or memory-bound)"),
            "{d}"
        );
        let unreported = GpuProfile { sm_active_mean: 0.0, ..bursty };
        assert!(!describe(&unreported, WorkloadKind::Bursty).contains("SM-active"), "0 means not reported");
        let busy = GpuProfile { mean_util: 0.6, p95_util: 0.75, util_std: 0.1, ..IDLE };
        assert_eq!(WorkloadKind::classify(&busy), WorkloadKind::Busy);
        let light = GpuProfile { mean_util: 0.2, p95_util: 0.3, util_std: 0.05, ..IDLE };
        assert_eq!(WorkloadKind::classify(&light), WorkloadKind::Light);
    }

    #[test]
    fn silhouette_known_values() {
        // Points 0, 1 | 10, 11 on a line.
        let x = Array2::from_shape_vec((4, 1), vec![0.0, 1.0, 10.0, 11.0]).unwrap_or_default();
        let d = pairwise_distances(x.view());
        let s = silhouette(&d, &[0, 0, 1, 1], 2, 4);
        // a = 1, b = mean(10, 11) = 10.5 or mean(9, 10) = 9.5 → s = (9.5-1)/9.5 and (10.5-1)/10.5.
        let expected = ((9.5 - 1.0) / 9.5 + (10.5 - 1.0) / 10.5) / 2.0;
        assert!((s - expected).abs() < 1e-12);
        assert_eq!(silhouette(&d, &[0, 0, 0, 0], 1, 4), 0.0);
    }
}

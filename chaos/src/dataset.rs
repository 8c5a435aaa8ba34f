//! Seeded workloads: clustered synthetic vectors or vectors read from `.npy` / `.fvecs` files,
//! query pools, and metadata with a controlled filter selectivity. Pure logic, no network.

use std::path::Path;

use anyhow::{bail, Context};
use quiver_proto::DistanceMetric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Largest dataset we load or generate (vectors × dimension floats), 4 GiB of f32.
pub const MAX_FLOATS: usize = 1 << 30;

/// Row-major vectors; vector `i` is stored under key `v{i}`.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dimension: usize,
    pub vectors: Vec<f32>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.vectors.len() / self.dimension.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dimension..(i + 1) * self.dimension]
    }

    /// Keeps the first `n` vectors.
    pub fn truncate(&mut self, n: usize) {
        self.vectors.truncate(n * self.dimension);
    }

    /// Splits off the last `n` vectors (held-out queries for file datasets).
    pub fn split_off_tail(&mut self, n: usize) -> Dataset {
        let keep = self.len().saturating_sub(n);
        let tail = self.vectors.split_off(keep * self.dimension);
        Dataset {
            dimension: self.dimension,
            vectors: tail,
        }
    }

    /// Largest absolute coordinate (used to place churn vectors far from all queries).
    pub fn max_abs(&self) -> f32 {
        self.vectors.iter().fold(0f32, |m, v| m.max(v.abs()))
    }
}

pub fn key(i: usize) -> String {
    format!("v{i}")
}

/// Inverse of [`key`]; `None` for keys the workload did not create from the dataset.
pub fn parse_key(key: &str) -> Option<usize> {
    key.strip_prefix('v')?.parse().ok()
}

/// Metadata groups: vector `i` is in group `i % groups`, so an equality filter on one group
/// selects `1 / groups` of the dataset.
pub fn groups_for_selectivity(selectivity: f64) -> anyhow::Result<usize> {
    if !(selectivity > 0.0 && selectivity <= 1.0) {
        bail!("filter selectivity must be in (0, 1], got {selectivity}");
    }
    Ok(((1.0 / selectivity).round() as usize).max(1))
}

pub fn group_of(i: usize, groups: usize) -> usize {
    i % groups.max(1)
}

pub fn group_name(group: usize) -> String {
    format!("g{group}")
}

/// Metadata of dataset vector `i`: a filterable group and an ordinal.
pub fn metadata(i: usize, groups: usize) -> serde_json::Value {
    serde_json::json!({ "group": group_name(group_of(i, groups)), "ordinal": i })
}

/// Standard normal sample (Box-Muller); avoids a distribution crate for one function.
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Gaussian clusters: `clusters` centers ~ N(0, 1) per coordinate, points = center + N(0, spread).
#[derive(Debug, Clone)]
pub struct ClusteredGenerator {
    dimension: usize,
    spread: f32,
    centers: Vec<f32>,
}

impl ClusteredGenerator {
    pub fn new(dimension: usize, clusters: usize, spread: f32, seed: u64) -> Self {
        let clusters = clusters.max(1);
        let mut rng = StdRng::seed_from_u64(seed);
        let centers = (0..clusters * dimension)
            .map(|_| normal(&mut rng))
            .collect();
        ClusteredGenerator {
            dimension,
            spread,
            centers,
        }
    }

    fn clusters(&self) -> usize {
        self.centers.len() / self.dimension.max(1)
    }

    /// `count` points; the same `(seed, count)` gives the same points.
    pub fn points(&self, count: usize, seed: u64) -> Dataset {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut vectors = Vec::with_capacity(count * self.dimension);
        for _ in 0..count {
            let c = rng.gen_range(0..self.clusters());
            let center = &self.centers[c * self.dimension..(c + 1) * self.dimension];
            vectors.extend(center.iter().map(|x| x + self.spread * normal(&mut rng)));
        }
        Dataset {
            dimension: self.dimension,
            vectors,
        }
    }
}

/// A vector that can never be among the top results of a query near the data: far away for
/// euclidean, pointing the other way for cosine. Writes during a load run use these, so the exact
/// ground truth of the immutable dataset stays valid while the index changes.
pub fn churn_vector(source: &[f32], metric: DistanceMetric, offset: f32) -> Vec<f32> {
    match metric {
        DistanceMetric::Euclidean => source.iter().map(|x| x + offset).collect(),
        DistanceMetric::Cosine => source.iter().map(|x| -x).collect(),
    }
}

pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Reads a dataset file by extension: `.fvecs` (int32 dimension + f32 values per row) or `.npy`
/// (2-D little-endian float32/float64, C order). At most `limit` rows are kept.
pub fn read_file(path: &Path, limit: usize) -> anyhow::Result<Dataset> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("fvecs") => parse_fvecs(&bytes, limit),
        Some("npy") => parse_npy(&bytes, limit),
        _ => bail!("{}: expected a .npy or .fvecs file", path.display()),
    }
}

pub fn parse_fvecs(bytes: &[u8], limit: usize) -> anyhow::Result<Dataset> {
    if bytes.len() < 4 {
        bail!("fvecs file is empty");
    }
    let dimension = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if !(1..=4096).contains(&dimension) {
        bail!("fvecs dimension {dimension} outside 1..=4096");
    }
    let dimension = dimension as usize;
    let row = 4 + 4 * dimension;
    if bytes.len() % row != 0 {
        bail!(
            "fvecs file size {} is not a multiple of the row size {row}",
            bytes.len()
        );
    }
    let rows = (bytes.len() / row).min(limit);
    let mut vectors = Vec::with_capacity(rows * dimension);
    for r in 0..rows {
        let record = &bytes[r * row..(r + 1) * row];
        if record[..4] != bytes[..4] {
            bail!("fvecs row {r} has a different dimension");
        }
        vectors.extend(
            record[4..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    check_size(&vectors)?;
    Ok(Dataset { dimension, vectors })
}

pub fn parse_npy(bytes: &[u8], limit: usize) -> anyhow::Result<Dataset> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not a .npy file");
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => bail!("unsupported .npy version {v}"),
    };
    let header = bytes
        .get(start..start + header_len)
        .context("truncated .npy header")?;
    let header = std::str::from_utf8(header).context(".npy header is not text")?;
    let width = if header.contains("'<f4'") {
        4
    } else if header.contains("'<f8'") {
        8
    } else {
        bail!(".npy dtype must be little-endian float32 or float64: {header}");
    };
    if header.contains("'fortran_order': True") {
        bail!(".npy arrays in Fortran order are not supported");
    }
    let shape = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .context(".npy header has no shape")?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().context("bad .npy shape"))
        .collect::<anyhow::Result<_>>()?;
    let [rows, dimension] = dims[..] else {
        bail!(".npy array must be 2-D, shape is ({shape})");
    };
    if !(1..=4096).contains(&dimension) {
        bail!(".npy dimension {dimension} outside 1..=4096");
    }
    let data = &bytes[start + header_len..];
    if data.len() < rows * dimension * width {
        bail!("truncated .npy data");
    }
    let rows = rows.min(limit);
    let values = &data[..rows * dimension * width];
    let vectors: Vec<f32> = if width == 4 {
        values
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        values
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b) as f32
            })
            .collect()
    };
    check_size(&vectors)?;
    Ok(Dataset { dimension, vectors })
}

fn check_size(vectors: &[f32]) -> anyhow::Result<()> {
    if vectors.len() > MAX_FLOATS {
        bail!("dataset larger than {MAX_FLOATS} floats; pass a smaller --count");
    }
    if vectors.iter().any(|v| !v.is_finite()) {
        bail!("dataset contains NaN or infinite values");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_seeded_and_clustered() {
        let generator = ClusteredGenerator::new(8, 4, 0.05, 7);
        let a = generator.points(100, 1);
        let b = ClusteredGenerator::new(8, 4, 0.05, 7).points(100, 1);
        assert_eq!(a.vectors, b.vectors);
        assert_eq!(a.len(), 100);
        let c = generator.points(100, 2);
        assert_ne!(a.vectors, c.vectors);
        // Every point is close to one of the 4 centers.
        for i in 0..a.len() {
            let nearest = (0..4)
                .map(|c| {
                    let center = &generator.centers[c * 8..(c + 1) * 8];
                    center
                        .iter()
                        .zip(a.vector(i))
                        .map(|(x, y)| (x - y).powi(2))
                        .sum::<f32>()
                })
                .fold(f32::MAX, f32::min);
            assert!(nearest < 0.5, "{nearest}");
        }
    }

    #[test]
    fn selectivity_maps_to_groups() {
        assert_eq!(groups_for_selectivity(0.1).unwrap(), 10);
        assert_eq!(groups_for_selectivity(1.0).unwrap(), 1);
        assert_eq!(groups_for_selectivity(0.01).unwrap(), 100);
        assert!(groups_for_selectivity(0.0).is_err());
        assert!(groups_for_selectivity(1.5).is_err());
        let in_group_3 = (0..1000).filter(|&i| group_of(i, 10) == 3).count();
        assert_eq!(in_group_3, 100);
        assert_eq!(metadata(13, 10)["group"], "g3");
        assert_eq!(parse_key(&key(42)), Some(42));
        assert_eq!(parse_key("churn-1"), None);
    }

    #[test]
    fn fvecs_and_npy_round_trip() {
        let mut fvecs = Vec::new();
        for row in 0..3 {
            fvecs.extend_from_slice(&2i32.to_le_bytes());
            fvecs.extend_from_slice(&(row as f32).to_le_bytes());
            fvecs.extend_from_slice(&(row as f32 + 0.5).to_le_bytes());
        }
        let d = parse_fvecs(&fvecs, 10).unwrap();
        assert_eq!(d.dimension, 2);
        assert_eq!(d.vectors, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!(parse_fvecs(&fvecs, 2).unwrap().len(), 2);
        assert!(parse_fvecs(&fvecs[..fvecs.len() - 1], 10).is_err());

        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }";
        let mut padded = header.to_owned();
        while (10 + padded.len() + 1) % 64 != 0 {
            padded.push(' ');
        }
        padded.push('\n');
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
        npy.extend_from_slice(padded.as_bytes());
        for v in [0.0f32, 0.5, 1.0, 1.5, 2.0, 2.5] {
            npy.extend_from_slice(&v.to_le_bytes());
        }
        let d = parse_npy(&npy, 10).unwrap();
        assert_eq!(d.dimension, 2);
        assert_eq!(d.vectors, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert!(parse_npy(&npy[..npy.len() - 4], 10).is_err());
    }

    #[test]
    fn churn_vectors_are_shifted_past_the_data_and_the_tail_splits_off() {
        let v = [0.5f32, -0.25];
        assert_eq!(
            churn_vector(&v, DistanceMetric::Euclidean, 10.0),
            vec![10.5, 9.75]
        );
        let c = churn_vector(&v, DistanceMetric::Cosine, 0.0);
        let dot: f32 = c.iter().zip(&v).map(|(a, b)| a * b).sum();
        assert!(dot < 0.0);
        let mut d = Dataset {
            dimension: 2,
            vectors: vec![1.0, 2.0, 3.0, -4.0, 5.0, 6.0],
        };
        assert_eq!(d.max_abs(), 6.0);
        let tail = d.split_off_tail(1);
        assert_eq!(tail.vectors, vec![5.0, 6.0]);
        assert_eq!(d.len(), 2);
    }
}

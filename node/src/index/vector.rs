//! The FAISS wrapper: the only module in Quiver that touches FAISS and `unsafe`.
//!
//! Vectors are added under stable 64-bit internal ids (an `IDMap2` wrapper around the configured
//! index, HNSW by default). Deleted or overwritten ids stay in the FAISS graph as tombstones and
//! are excluded at search time with an ID selector; the shard rebuilds the index when tombstones
//! pass a threshold.

use std::path::Path;

use faiss::index::IndexImpl;
use faiss::{Idx, Index, MetricType};
use quiver_proto::DistanceMetric;

/// Default FAISS index description: HNSW with 32 links per node over flat (exact) storage.
pub const DEFAULT_INDEX_DESCRIPTION: &str = "HNSW32,Flat";
/// Default HNSW search breadth; a search for k results uses `max(ef_search, k)`.
pub const DEFAULT_EF_SEARCH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum VectorIndexError {
    #[error("faiss: {0}")]
    Faiss(#[from] faiss::error::Error),
    #[error("faiss call failed with code {0}")]
    Native(i32),
    #[error("invalid index description {0:?}")]
    Description(String),
}

extern "C" {
    /// libgomp (linked by FAISS): the number of threads of OpenMP regions started by the
    /// calling thread.
    fn omp_set_num_threads(threads: std::os::raw::c_int);
}

thread_local! {
    static SINGLE_THREADED_OPENMP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes FAISS calls from this thread run their OpenMP regions on this thread alone. A single
/// query gains nothing from a thread team, and waking one per query (futex wake-ups, yields) cost
/// more than the search itself on a loaded node; concurrency comes from concurrent queries.
fn single_threaded_openmp() {
    SINGLE_THREADED_OPENMP.with(|done| {
        if !done.get() {
            // SAFETY: sets a thread-local OpenMP control variable; no memory is touched.
            unsafe { omp_set_num_threads(1) };
            done.set(true);
        }
    });
}

/// A FAISS index over internal ids, safe to search from many threads at once.
pub struct VectorIndex {
    inner: IndexImpl,
    dimension: usize,
}

// SAFETY: FAISS indexes may be searched concurrently from several threads (search is a const
// method in C++); every mutation goes through `&mut self`, which the shard's lock makes exclusive.
unsafe impl Sync for VectorIndex {}

fn faiss_metric(metric: DistanceMetric) -> MetricType {
    match metric {
        // Cosine vectors are normalized before they reach FAISS, so inner product = cosine.
        DistanceMetric::Cosine => MetricType::InnerProduct,
        DistanceMetric::Euclidean => MetricType::L2,
    }
}

impl VectorIndex {
    pub fn new(
        dimension: usize,
        metric: DistanceMetric,
        description: &str,
        ef_search: usize,
    ) -> Result<Self, VectorIndexError> {
        if description.contains("IDMap") {
            return Err(VectorIndexError::Description(description.to_owned()));
        }
        let dim = u32::try_from(dimension)
            .map_err(|_| VectorIndexError::Description(description.to_owned()))?;
        let inner =
            faiss::index_factory(dim, format!("IDMap2,{description}"), faiss_metric(metric))?;
        let mut index = VectorIndex { inner, dimension };
        // efSearch must take on an HNSW index (a silent failure would change recall unseen);
        // other index types have no such parameter.
        index.set_parameter("efSearch", ef_search as f64, description.contains("HNSW"))?;
        Ok(index)
    }

    /// Sets a FAISS tuning parameter by name. FAISS refuses a parameter that does not apply to
    /// the index type (e.g. `efSearch` on a flat index): an error only if `required`.
    fn set_parameter(
        &mut self,
        name: &str,
        value: f64,
        required: bool,
    ) -> Result<(), VectorIndexError> {
        let Ok(c_name) = std::ffi::CString::new(name) else {
            return Err(VectorIndexError::Description(name.to_owned()));
        };
        // SAFETY: `space` is created, used with a live index pointer and freed in this block.
        unsafe {
            let mut space = std::ptr::null_mut();
            let rc = faiss_sys::faiss_ParameterSpace_new(&mut space);
            if rc != 0 {
                return Err(VectorIndexError::Native(rc));
            }
            let rc = faiss_sys::faiss_ParameterSpace_set_index_parameter(
                space,
                self.inner.inner_ptr(),
                c_name.as_ptr(),
                value,
            );
            faiss_sys::faiss_ParameterSpace_free(space);
            if rc != 0 && required {
                return Err(VectorIndexError::Native(rc));
            }
        }
        Ok(())
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Number of vectors in the index, tombstones included.
    pub fn len(&self) -> u64 {
        self.inner.ntotal()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `vectors` (row-major, `ids.len() * dimension` floats) under `ids`.
    pub fn add(&mut self, vectors: &[f32], ids: &[u64]) -> Result<(), VectorIndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<Idx> = ids.iter().map(|&id| Idx::new(id)).collect();
        self.inner.add_with_ids(vectors, &ids)?;
        Ok(())
    }

    /// Searches for the `k` nearest ids. `allowed` is a bitmap over internal ids (bit `i` of byte
    /// `i / 8`): only those ids may be returned. Returns `(raw faiss distance, id)` pairs.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&[u8]>,
    ) -> Result<Vec<(f32, u64)>, VectorIndexError> {
        if k == 0 || self.is_empty() || query.len() != self.dimension {
            return Ok(Vec::new());
        }
        single_threaded_openmp();
        let mut distances = vec![0f32; k];
        let mut labels = vec![-1i64; k];
        // SAFETY: the index pointer is valid for `&self`; FAISS search is thread-safe; the output
        // buffers hold exactly `k` entries for one query; selector and parameters are owned here
        // and freed before returning (the parameters object is never shared between threads).
        let rc = unsafe {
            let mut selector = std::ptr::null_mut();
            let mut params = std::ptr::null_mut();
            if let Some(bitmap) = allowed {
                let rc = faiss_sys::faiss_IDSelectorBitmap_new(
                    &mut selector,
                    bitmap.len(),
                    bitmap.as_ptr(),
                );
                if rc != 0 {
                    return Err(VectorIndexError::Native(rc));
                }
                let rc = faiss_sys::faiss_SearchParameters_new(&mut params, selector.cast());
                if rc != 0 {
                    faiss_sys::faiss_IDSelector_free(selector.cast());
                    return Err(VectorIndexError::Native(rc));
                }
            }
            let rc = faiss_sys::faiss_Index_search_with_params(
                self.inner.inner_ptr(),
                1,
                query.as_ptr(),
                k as faiss_sys::idx_t,
                params,
                distances.as_mut_ptr(),
                labels.as_mut_ptr(),
            );
            if !params.is_null() {
                faiss_sys::faiss_SearchParameters_free(params);
            }
            if !selector.is_null() {
                faiss_sys::faiss_IDSelector_free(selector.cast());
            }
            rc
        };
        if rc != 0 {
            return Err(VectorIndexError::Native(rc));
        }
        Ok(distances
            .into_iter()
            .zip(labels)
            .filter_map(|(d, label)| u64::try_from(label).ok().map(|id| (d, id)))
            .collect())
    }

    /// Writes the index to `path` (the caller renames it into place).
    pub fn write(&self, path: &Path) -> Result<(), VectorIndexError> {
        let path = path.to_string_lossy().into_owned();
        faiss::write_index(&self.inner, path)?;
        Ok(())
    }

    /// Loads an index written by [`VectorIndex::write`].
    pub fn read(path: &Path, dimension: usize, ef_search: usize) -> Result<Self, VectorIndexError> {
        let inner = faiss::read_index(&*path.to_string_lossy())?;
        if inner.d() as usize != dimension {
            return Err(VectorIndexError::Description(format!(
                "checkpoint has dimension {}, expected {dimension}",
                inner.d()
            )));
        }
        let mut index = VectorIndex { inner, dimension };
        // The checkpoint's index type is not known here; [`VectorIndex::new`] already refused
        // an HNSW description on which efSearch does not take.
        index.set_parameter("efSearch", ef_search as f64, false)?;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_respects_the_id_bitmap_and_survives_a_checkpoint() {
        let dim = 4;
        let mut index =
            VectorIndex::new(dim, DistanceMetric::Euclidean, "Flat", 64).expect("index");
        let mut data = Vec::new();
        let ids: Vec<u64> = (0..200).map(|i| i * 3 + 7).collect();
        for &id in &ids {
            data.extend_from_slice(&[id as f32, 0.0, 0.0, 0.0]);
        }
        index.add(&data, &ids).expect("add");
        let hits = index
            .search(&[10.0, 0.0, 0.0, 0.0], 3, None)
            .expect("search");
        assert_eq!(hits[0].1, 10);
        assert_eq!(hits[0].0, 0.0);
        // Exclude id 10 with the bitmap: the nearest allowed id is then 7 or 13.
        let max_id = 7 + 199 * 3;
        let mut bitmap = vec![0u8; max_id / 8 + 1];
        for &id in &ids {
            if id != 10 {
                bitmap[id as usize / 8] |= 1 << (id % 8);
            }
        }
        let hits = index
            .search(&[10.0, 0.0, 0.0, 0.0], 2, Some(&bitmap))
            .expect("search");
        let got: Vec<u64> = hits.iter().map(|h| h.1).collect();
        assert!(got.contains(&7) && got.contains(&13), "{got:?}");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.faiss");
        index.write(&path).expect("write");
        let loaded = VectorIndex::read(&path, dim, 64).expect("read");
        assert_eq!(loaded.len(), 200);
        let hits = loaded
            .search(&[601.0, 0.0, 0.0, 0.0], 1, None)
            .expect("search");
        assert_eq!(hits[0].1, 601);
    }
}

//! Exact distance kernels for the shard's exact search and re-ranking.
//!
//! A plain `iter().sum()` over f32 is one long dependency chain (floating-point addition is not
//! reassociated by the compiler), so it cannot use SIMD. Accumulating into independent lanes lets
//! LLVM vectorize; the lane count covers one AVX-512 or two AVX2/four SSE registers.

const LANES: usize = 16;

/// Sum of `f(a[i], b[i])` with `LANES` independent accumulators.
#[inline]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks_a = a.chunks_exact(LANES);
    let chunks_b = b.chunks_exact(LANES);
    let (rest_a, rest_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..LANES {
            acc[i] += f(ca[i], cb[i]);
        }
    }
    let mut total: f32 = acc.iter().sum();
    for (x, y) in rest_a.iter().zip(rest_b) {
        total += f(*x, *y);
    }
    total
}

/// Squared L2 distance.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    lane_sum(a, b, |x, y| (x - y) * (x - y))
}

/// Inner product.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    lane_sum(a, b, |x, y| x * y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_the_naive_sums() {
        for len in [0usize, 1, 3, 15, 16, 17, 33, 128, 130] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive_l2: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(x - y).powi(2))
                .sum();
            let naive_dot: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!(
                (f64::from(l2_squared(&a, &b)) - naive_l2).abs() < 1e-4,
                "{len}"
            );
            assert!((f64::from(dot(&a, &b)) - naive_dot).abs() < 1e-4, "{len}");
        }
    }
}

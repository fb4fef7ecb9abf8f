//! Latency summaries, computed the same way as the peers' (`bench/peers/common.py`): nearest
//! rank on the sorted samples.

/// The `q` quantile (0..=1) of `samples` by nearest rank; 0 for no samples.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts `samples` (seconds) and returns (p50, p99) in microseconds.
pub fn p50_p99_us(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (quantile(samples, 0.50) * 1e6, quantile(samples, 0.99) * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&s, 0.5), 50.0);
        assert_eq!(quantile(&s, 0.99), 99.0);
        assert_eq!(quantile(&s, 1.0), 100.0);
        assert_eq!(quantile(&s, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn p50_p99_sorts_and_scales_to_microseconds() {
        let mut s = vec![0.003, 0.001, 0.002];
        let (p50, p99) = p50_p99_us(&mut s);
        assert!((p50 - 2000.0).abs() < 1e-6, "{p50}");
        assert!((p99 - 3000.0).abs() < 1e-6, "{p99}");
    }
}

//! Latency histogram with log-linear buckets (32 per power of two, so under 3.2% error),
//! fixed size, no allocation per sample. Owns RTT statistics only.

const SUB: u32 = 32;
const BUCKETS: usize = 64 * SUB as usize;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < 2 * SUB as u64 {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB.trailing_zeros();
    (shift * SUB) as usize + (v >> shift) as usize
}

/// The highest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < 2 * SUB as usize {
        return i as u64;
    }
    let shift = i as u32 / SUB - 1;
    let mantissa = i as u64 - (shift * SUB) as u64;
    ((mantissa + 1) << shift) - 1
}

impl Hist {
    pub fn record(&mut self, v: u64, n: u64) {
        self.counts[index(v)] += n;
        self.total += n;
        self.sum += v as u128 * n as u128;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    /// Value at quantile `q` (0..=1), as its bucket's upper bound capped at the exact max.
    pub fn quantile(&self, q: f64) -> u64 {
        let rank = ((self.total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }

    /// Exact mean; with Little's law it must match connections x depth / rate.
    pub fn mean(&self) -> u64 {
        (self.sum / u128::from(self.total.max(1))) as u64
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1000,
            123_456_789,
            u64::MAX >> 1,
        ] {
            let i = index(v);
            assert!(upper(i) >= v && (i == 0 || upper(i - 1) < v), "v={v}");
            assert!(upper(i) - v <= v / 31, "v={v} upper={}", upper(i));
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Hist::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000, 1);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 5e6).abs() / 5e6 < 0.04, "p50 {p50}");
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 - 9.9e6).abs() / 9.9e6 < 0.04, "p99 {p99}");
        assert_eq!(h.max(), 10_000_000);
        assert_eq!(h.mean(), 5_000_500);
    }
}

//! Summaries of failover samples: percentiles, CDF points, formatting. Pure.

/// Nearest-rank percentile (`p` in 0..=100) of ascending `sorted` samples: the
/// smallest sample with at least p% of the samples at or below it. With 20 runs,
/// p95 is the 19th smallest.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p95 and max of one cell, in ms; `missed` runs never saw the new holder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub missed: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

pub fn summarize(samples: &[f64], missed: usize) -> Option<Summary> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    Some(Summary {
        n: s.len(),
        missed,
        p50: percentile(&s, 50.0)?,
        p95: percentile(&s, 95.0)?,
        max: *s.last()?,
    })
}

/// The empirical CDF as a step line: for each sorted sample x_i, the points
/// (x_i, i/n) and (x_i, (i+1)/n).
pub fn cdf_points(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    s.iter()
        .enumerate()
        .flat_map(|(i, &x)| [(x, i as f64 / n), (x, (i + 1) as f64 / n)])
        .collect()
}

/// A duration in ms for tables: "0.8 ms", "34.1 ms", "3.62 s".
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// a / b as "0.27x", or "n/a".
pub fn fmt_ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(10.0));
        assert_eq!(percentile(&s, 95.0), Some(19.0));
        assert_eq!(percentile(&s, 100.0), Some(20.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_first() {
        let s = summarize(&[30.0, 10.0, 20.0], 1).unwrap();
        assert_eq!(
            (s.n, s.missed, s.p50, s.p95, s.max),
            (3, 1, 20.0, 30.0, 30.0)
        );
        assert!(summarize(&[], 3).is_none());
    }

    #[test]
    fn cdf_is_a_monotone_step_from_0_to_1() {
        let p = cdf_points(&[3.0, 1.0, 2.0, 2.0]);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0], (1.0, 0.0));
        assert_eq!(p[1], (1.0, 0.25));
        assert_eq!(*p.last().unwrap(), (3.0, 1.0));
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_ms(34.06), "34.1 ms");
        assert_eq!(fmt_ms(3620.0), "3.62 s");
        assert_eq!(fmt_ratio(10.0, 40.0), "0.25x");
        assert_eq!(fmt_ratio(1.0, 0.0), "n/a");
    }
}

//! Summaries of repeated trials: medians with the range, and ratios of medians.

use serde::Serialize;

/// Median, minimum and maximum of a set of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// A ratio of medians, with the range of the ratios of the trials run back to back (trial i of
/// the numerator with trial i of the denominator), which shows how steady the machine was.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ratio {
    pub of_medians: f64,
    pub pairwise_min: f64,
    pub pairwise_max: f64,
}

impl Ratio {
    pub fn of(numerator: &[f64], denominator: &[f64]) -> Option<Ratio> {
        let top = Summary::of(numerator)?;
        let bottom = Summary::of(denominator)?;
        if bottom.median <= 0.0 {
            return None;
        }
        let pairs: Vec<f64> = numerator
            .iter()
            .zip(denominator)
            .filter(|(_, bottom)| **bottom > 0.0)
            .map(|(top, bottom)| top / bottom)
            .collect();
        let range = Summary::of(&pairs)?;
        Some(Ratio {
            of_medians: top.median / bottom.median,
            pairwise_min: range.min,
            pairwise_max: range.max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(Summary::of(&[]), None);
        let odd = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        let even = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(even.median, 2.5);
    }

    #[test]
    fn ratios() {
        let ratio = Ratio::of(&[8.0, 9.0, 10.0], &[10.0, 10.0, 10.0]).unwrap();
        assert!((ratio.of_medians - 0.9).abs() < 1e-12);
        assert!((ratio.pairwise_min - 0.8).abs() < 1e-12);
        assert!((ratio.pairwise_max - 1.0).abs() < 1e-12);
        assert_eq!(Ratio::of(&[1.0], &[0.0]), None);
    }
}

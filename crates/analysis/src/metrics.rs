//! Ranking and probability metrics of a scored, labelled population.
//!
//! Every function takes `(score, churned)` pairs. Ties in the score are
//! handled exactly, never by an arbitrary order: ROC AUC gives a tied
//! positive/negative pair half a win (the Mann–Whitney statistic with
//! average ranks), average precision takes a group of tied scores as one
//! threshold, and the top-k figures count a tied group at the cut-off
//! fractionally (the expected value under a random order within the group).
//! So the figures do not depend on the order of the input.
//! Definitions: `docs/analysis.md`.

use serde::Serialize;

/// Customers sharing one score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreGroup {
    /// The score.
    pub score: f64,
    /// Churned customers with this score.
    pub positives: u64,
    /// Retained customers with this score.
    pub negatives: u64,
}

impl ScoreGroup {
    fn size(&self) -> u64 {
        self.positives + self.negatives
    }
}

/// Groups pairs by score, highest score first.
pub fn groups_descending(items: &[(f64, bool)]) -> Vec<ScoreGroup> {
    let mut sorted: Vec<(f64, bool)> = items.to_vec();
    sorted.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut groups: Vec<ScoreGroup> = Vec::new();
    for (score, churned) in sorted {
        match groups.last_mut() {
            // `==` (not total_cmp) so that 0.0 and -0.0 are one score.
            Some(g) if g.score == score || (g.score.is_nan() && score.is_nan()) => {}
            _ => groups.push(ScoreGroup {
                score,
                positives: 0,
                negatives: 0,
            }),
        }
        if let Some(g) = groups.last_mut() {
            if churned {
                g.positives += 1;
            } else {
                g.negatives += 1;
            }
        }
    }
    groups
}

fn totals(groups: &[ScoreGroup]) -> (u64, u64) {
    groups
        .iter()
        .fold((0, 0), |(p, n), g| (p + g.positives, n + g.negatives))
}

/// ROC AUC: the probability that a random churned customer scores above a
/// random retained one, a tie counting one half. `None` without both classes.
pub fn roc_auc(items: &[(f64, bool)]) -> Option<f64> {
    roc_auc_of_groups(&groups_descending(items))
}

/// [`roc_auc`] of already grouped scores.
pub fn roc_auc_of_groups(groups: &[ScoreGroup]) -> Option<f64> {
    let (pos, neg) = totals(groups);
    if pos == 0 || neg == 0 {
        return None;
    }
    // Twice the Mann–Whitney U, in integers so the figure is exact until the
    // final division.
    let mut twice_u: u128 = 0;
    let mut neg_below: u128 = u128::from(neg);
    for g in groups {
        neg_below -= u128::from(g.negatives);
        twice_u += 2 * u128::from(g.positives) * neg_below
            + u128::from(g.positives) * u128::from(g.negatives);
    }
    Some(twice_u as f64 / (2.0 * pos as f64 * neg as f64))
}

/// Average precision (PR AUC): Σ over distinct scores, highest first, of
/// (recall gained at that score) × (precision at that score). `None` without positives.
pub fn average_precision(groups: &[ScoreGroup]) -> Option<f64> {
    let (pos, _) = totals(groups);
    if pos == 0 {
        return None;
    }
    let (mut tp, mut taken, mut ap) = (0_u64, 0_u64, 0.0);
    for g in groups {
        tp += g.positives;
        taken += g.size();
        if g.positives > 0 {
            ap += g.positives as f64 / pos as f64 * (tp as f64 / taken as f64);
        }
    }
    Some(ap)
}

/// Precision, recall and lift among the top `percent` % of customers by score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopShare {
    /// The share targeted, in percent.
    pub percent: u32,
    /// Customers targeted: ⌈N · percent / 100⌉ (at least 1).
    pub customers: u64,
    /// Expected churned customers among them (ties at the cut-off counted fractionally).
    pub churned: f64,
    /// churned / customers.
    pub precision: Option<f64>,
    /// churned / all churned customers.
    pub recall: Option<f64>,
    /// precision / base rate: how many times better than a random pick.
    pub lift: Option<f64>,
}

/// The top `percent` % by score (see [`TopShare`]).
pub fn top_share(groups: &[ScoreGroup], percent: u32) -> TopShare {
    let (pos, neg) = totals(groups);
    let n = pos + neg;
    let target = if n == 0 {
        0
    } else {
        (n * u64::from(percent)).div_ceil(100).clamp(1, n)
    };
    let mut taken = 0_u64;
    let mut churned = 0.0;
    for g in groups {
        if taken >= target {
            break;
        }
        let room = target - taken;
        if g.size() <= room {
            churned += g.positives as f64;
            taken += g.size();
        } else {
            churned += g.positives as f64 * room as f64 / g.size() as f64;
            taken = target;
        }
    }
    let precision = (target > 0).then(|| churned / target as f64);
    let base_rate = (n > 0).then(|| pos as f64 / n as f64);
    TopShare {
        percent,
        customers: target,
        churned,
        precision,
        recall: (pos > 0).then(|| churned / pos as f64),
        lift: match (precision, base_rate) {
            (Some(p), Some(b)) if b > 0.0 => Some(p / b),
            _ => None,
        },
    }
}

/// ROC curve points (false-positive rate, true-positive rate), one per
/// distinct score, from (0, 0) to (1, 1).
pub fn roc_points(groups: &[ScoreGroup]) -> Vec<(f64, f64)> {
    let (pos, neg) = totals(groups);
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0_u64, 0_u64);
    for g in groups {
        tp += g.positives;
        fp += g.negatives;
        points.push((ratio(fp, neg), ratio(tp, pos)));
    }
    points
}

/// Cumulative gain points (share of customers targeted, share of churned
/// customers captured), one per distinct score, from (0, 0) to (1, 1).
pub fn gain_points(groups: &[ScoreGroup]) -> Vec<(f64, f64)> {
    let (pos, neg) = totals(groups);
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut taken) = (0_u64, 0_u64);
    for g in groups {
        tp += g.positives;
        taken += g.size();
        points.push((ratio(taken, pos + neg), ratio(tp, pos)));
    }
    points
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Brier score: mean squared difference between the predicted probability
/// and the outcome (1 churned, 0 retained). `None` for no customers.
pub fn brier(items: &[(f64, bool)]) -> Option<f64> {
    if items.is_empty() {
        return None;
    }
    let sum: f64 = items
        .iter()
        .map(|&(p, y)| (p - f64::from(u8::from(y))).powi(2))
        .sum();
    Some(sum / items.len() as f64)
}

/// One calibration bin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// 1 = lowest predicted risk.
    pub decile: u32,
    /// Customers in the bin.
    pub customers: u64,
    /// Mean predicted probability.
    pub mean_predicted: f64,
    /// Share of them who churned.
    pub observed_rate: f64,
    /// Lowest predicted probability in the bin.
    pub min_predicted: f64,
    /// Highest predicted probability in the bin.
    pub max_predicted: f64,
}

/// Deciles of predicted probability: the customers sorted by probability
/// (ties kept in input order, so pass them in a fixed order) and cut into ten
/// bins of ⌊i·n/10⌋..⌊(i+1)·n/10⌋. Empty bins (fewer than ten customers) are left out.
pub fn calibration_deciles(items: &[(f64, bool)]) -> Vec<CalibrationBin> {
    let mut sorted: Vec<(f64, bool)> = items.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = sorted.len();
    let mut bins = Vec::with_capacity(10);
    for i in 0..10 {
        let bin = &sorted[i * n / 10..(i + 1) * n / 10];
        let (Some(first), Some(last)) = (bin.first(), bin.last()) else {
            continue;
        };
        let count = bin.len() as f64;
        bins.push(CalibrationBin {
            decile: i as u32 + 1,
            customers: bin.len() as u64,
            mean_predicted: bin.iter().map(|x| x.0).sum::<f64>() / count,
            observed_rate: bin.iter().filter(|x| x.1).count() as f64 / count,
            min_predicted: first.0,
            max_predicted: last.0,
        });
    }
    bins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_random_and_inverted_rankings() {
        let perfect = [(0.9, true), (0.8, true), (0.2, false), (0.1, false)];
        assert_eq!(roc_auc(&perfect), Some(1.0));
        let inverted = [(0.1, true), (0.2, true), (0.8, false), (0.9, false)];
        assert_eq!(roc_auc(&inverted), Some(0.0));
        let tied = [(0.5, true), (0.5, false), (0.5, true), (0.5, false)];
        assert_eq!(roc_auc(&tied), Some(0.5));
        assert_eq!(roc_auc(&[(0.5, true)]), None);
    }

    #[test]
    fn auc_with_a_tie_counts_half() {
        // Pairs: (0.8 vs 0.5)=1, (0.8 vs 0.3)=1, (0.5 vs 0.5)=½, (0.5 vs 0.3)=1 → 3.5/4.
        let items = [(0.8, true), (0.5, true), (0.5, false), (0.3, false)];
        assert_eq!(roc_auc(&items), Some(0.875));
    }

    #[test]
    fn average_precision_by_hand() {
        // Ranked: +, -, +, -: AP = ½·1 + ½·(2/3).
        let items = [(4.0, true), (3.0, false), (2.0, true), (1.0, false)];
        let ap = average_precision(&groups_descending(&items)).expect("positives");
        assert!((ap - (0.5 + 1.0 / 3.0)).abs() < 1e-15);
        // A tied top group of one positive and one negative: precision ½ there.
        let tied = [(4.0, true), (4.0, false)];
        assert_eq!(average_precision(&groups_descending(&tied)), Some(0.5));
    }

    #[test]
    fn top_share_counts_ties_at_the_cut_fractionally() {
        // 10 customers, 2 churned; top 10 % = 1 customer from a tied top group of 2 (1 churned).
        let mut items = vec![(0.9, true), (0.9, false), (0.5, true)];
        items.extend(std::iter::repeat_n((0.1, false), 7));
        let t = top_share(&groups_descending(&items), 10);
        assert_eq!(t.customers, 1);
        assert!((t.churned - 0.5).abs() < 1e-15);
        assert_eq!(t.precision, Some(0.5));
        assert_eq!(t.recall, Some(0.25));
        assert_eq!(t.lift, Some(2.5));
        let all = top_share(&groups_descending(&items), 100);
        assert_eq!(all.lift, Some(1.0));
    }

    #[test]
    fn curves_run_from_origin_to_one() {
        let items = [(0.8, true), (0.5, true), (0.5, false), (0.3, false)];
        let g = groups_descending(&items);
        let roc = roc_points(&g);
        assert_eq!(roc.first(), Some(&(0.0, 0.0)));
        assert_eq!(roc.last(), Some(&(1.0, 1.0)));
        let gain = gain_points(&g);
        assert_eq!(gain[1], (0.25, 0.5));
        assert_eq!(gain.last(), Some(&(1.0, 1.0)));
    }

    #[test]
    fn brier_and_calibration() {
        assert_eq!(brier(&[(1.0, true), (0.0, false)]), Some(0.0));
        assert_eq!(brier(&[(0.5, true), (0.5, false)]), Some(0.25));
        let items: Vec<(f64, bool)> = (0..100)
            .map(|i| (f64::from(i) / 100.0, i % 2 == 0))
            .collect();
        let bins = calibration_deciles(&items);
        assert_eq!(bins.len(), 10);
        assert!(bins.iter().all(|b| b.customers == 10));
        assert!((bins[0].mean_predicted - 0.045).abs() < 1e-12);
        assert_eq!(bins[9].max_predicted, 0.99);
        assert_eq!(calibration_deciles(&items[..3]).len(), 3);
    }
}

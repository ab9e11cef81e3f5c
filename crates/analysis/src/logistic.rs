//! A small L2-regularised logistic regression solver (Newton's method, i.e.
//! iteratively reweighted least squares, with a step-halving line search).
//!
//! Columns are standardised internally (unit standard deviation over the rows
//! being fitted) so that one penalty λ means the same for every factor
//! whatever its unit; the intercept is not penalised. The objective is
//!
//! ```text
//! (1/n) Σ [ln(1 + e^η) − y·η] + (λ/2) Σ β_std²,   η = b₀ + Σ β_std,j · z_j
//! ```
//!
//! and the result is given back in the original units. With a few dozen
//! columns the normal equations are tiny, so a dense Cholesky solve is all
//! that is needed: no linear-algebra crate.

/// A dense row-major design matrix: one row per customer, one column per factor.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    cols: usize,
    data: Vec<f64>,
}

impl Design {
    /// An empty matrix with `cols` columns.
    pub fn new(cols: usize) -> Self {
        Design {
            cols,
            data: Vec::new(),
        }
    }

    /// Appends a row; it must have exactly `cols` values.
    pub fn push_row(&mut self, row: &[f64]) -> Result<(), LogisticError> {
        if row.len() != self.cols {
            return Err(LogisticError::RowLength {
                expected: self.cols,
                found: row.len(),
            });
        }
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(LogisticError::NotFinite {
                row: self.rows(),
                col: j,
            });
        }
        self.data.extend_from_slice(row);
        Ok(())
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.cols).unwrap_or(0)
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// One row.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Replaces the value of row `i`, column `j`.
    pub fn set(&mut self, i: usize, j: usize, value: f64) {
        self.data[i * self.cols + j] = value;
    }
}

/// Why a fit could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogisticError {
    /// A row of the wrong length.
    #[error("row has {found} values, expected {expected}")]
    RowLength {
        /// Columns of the matrix.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A value is NaN or infinite.
    #[error("value at row {row}, column {col} is not finite")]
    NotFinite {
        /// Row index.
        row: usize,
        /// Column index.
        col: usize,
    },
    /// The outcome vector does not match the rows.
    #[error("{outcomes} outcomes for {rows} rows")]
    OutcomeLength {
        /// Rows of the matrix.
        rows: usize,
        /// Outcomes given.
        outcomes: usize,
    },
    /// All outcomes are equal: there is nothing to fit.
    #[error("every outcome is {0}: both churned and retained customers are needed")]
    SingleClass(bool),
    /// λ is negative or not finite.
    #[error("lambda must be a finite number ≥ 0")]
    BadLambda,
}

/// A fitted model in original units, with its coefficients per standard deviation.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticFit {
    /// Log-odds at all-zero inputs.
    pub intercept: f64,
    /// Log-odds per unit of each column (0 for columns left out or constant).
    pub coefficients: Vec<f64>,
    /// Newton iterations taken.
    pub iterations: usize,
    /// Whether the Newton decrement fell below the tolerance.
    pub converged: bool,
    /// Log-odds per standard deviation of each column (0 for columns left out
    /// or constant): comparable across columns.
    pub standardized_coefficients: Vec<f64>,
}

impl LogisticFit {
    /// Log-odds for one row of inputs.
    pub fn logit(&self, row: &[f64]) -> f64 {
        self.intercept
            + row
                .iter()
                .zip(&self.coefficients)
                .map(|(x, b)| x * b)
                .sum::<f64>()
    }

    /// Probability for one row of inputs.
    pub fn probability(&self, row: &[f64]) -> f64 {
        sigmoid(self.logit(row))
    }
}

/// The logistic function, computed without overflow.
pub fn sigmoid(eta: f64) -> f64 {
    if eta >= 0.0 {
        1.0 / (1.0 + (-eta).exp())
    } else {
        let e = eta.exp();
        e / (1.0 + e)
    }
}

/// ln(1 + e^η) without overflow.
fn softplus(eta: f64) -> f64 {
    if eta > 0.0 {
        eta + (-eta).exp().ln_1p()
    } else {
        eta.exp().ln_1p()
    }
}

/// Rows of a design prepared for fitting: the active columns scaled to unit
/// standard deviation and stored sparsely (most event counts are zero for
/// most customers, and the normal equations cost the square of the non-zero
/// entries per row).
///
/// The columns are scaled but not centred, so zeros stay zeros. Centring only
/// moves the unpenalised intercept (η = b₀ + Σ β_j (x_j − m_j)/s_j =
/// (b₀ − Σ β_j m_j/s_j) + Σ β_j x_j/s_j), so the optimum is the same as with
/// fully standardised columns.
#[derive(Debug, Clone)]
pub struct LogisticProblem {
    /// Which original columns are fitted (active and not constant).
    used: Vec<usize>,
    sd: Vec<f64>,
    total_cols: usize,
    /// Row i's entries are `entries[starts[i]..starts[i + 1]]`, in column order.
    starts: Vec<usize>,
    /// (index into `used`, value / sd).
    entries: Vec<(u32, f64)>,
    y: Vec<f64>,
}

/// Newton iterations at most; a well-posed problem converges in under ten.
const MAX_ITERATIONS: usize = 100;
/// Converged when half the Newton decrement (the expected fall of the objective) is below this.
const TOLERANCE: f64 = 1e-14;

impl LogisticProblem {
    /// Prepares `rows` of `x` (all rows when `None`) with outcomes `y` (one per
    /// row of `x`), fitting only the columns whose `active` flag is set.
    pub fn new(
        x: &Design,
        y: &[bool],
        rows: Option<&[usize]>,
        active: &[bool],
    ) -> Result<Self, LogisticError> {
        if y.len() != x.rows() {
            return Err(LogisticError::OutcomeLength {
                rows: x.rows(),
                outcomes: y.len(),
            });
        }
        let all: Vec<usize>;
        let rows = match rows {
            Some(r) => r,
            None => {
                all = (0..x.rows()).collect();
                &all
            }
        };
        let n = rows.len();
        let positives = rows.iter().filter(|&&i| y[i]).count();
        if positives == 0 || positives == n {
            return Err(LogisticError::SingleClass(positives > 0));
        }
        let mut used = Vec::new();
        let mut sd = Vec::new();
        for j in 0..x.cols() {
            if !active.get(j).copied().unwrap_or(false) {
                continue;
            }
            let m = rows.iter().map(|&i| x.row(i)[j]).sum::<f64>() / n as f64;
            let var = rows.iter().map(|&i| (x.row(i)[j] - m).powi(2)).sum::<f64>() / n as f64;
            let s = var.sqrt();
            // A constant column carries no information and would make the system singular.
            if s > 1e-12 * m.abs().max(1.0) {
                used.push(j);
                sd.push(s);
            }
        }
        let mut starts = Vec::with_capacity(n + 1);
        let mut entries = Vec::new();
        starts.push(0);
        for &i in rows {
            let row = x.row(i);
            for (k, &j) in used.iter().enumerate() {
                if row[j] != 0.0 {
                    entries.push((k as u32, row[j] / sd[k]));
                }
            }
            starts.push(entries.len());
        }
        Ok(LogisticProblem {
            used,
            sd,
            total_cols: x.cols(),
            starts,
            entries,
            y: rows.iter().map(|&i| f64::from(u8::from(y[i]))).collect(),
        })
    }

    #[inline]
    fn row(&self, i: usize) -> &[(u32, f64)] {
        &self.entries[self.starts[i]..self.starts[i + 1]]
    }

    #[inline]
    fn eta(&self, theta: &[f64], i: usize) -> f64 {
        theta[0]
            + self
                .row(i)
                .iter()
                .map(|&(k, v)| theta[k as usize + 1] * v)
                .sum::<f64>()
    }

    fn objective(&self, theta: &[f64], lambda: f64) -> f64 {
        let n = self.y.len();
        let mut loss = 0.0;
        for i in 0..n {
            let eta = self.eta(theta, i);
            loss += softplus(eta) - self.y[i] * eta;
        }
        let penalty: f64 = theta[1..].iter().map(|b| b * b).sum();
        loss / n as f64 + 0.5 * lambda * penalty
    }

    /// Fits at penalty `lambda`, starting from `start` (a previous fit on the
    /// same rows, any columns) when given; the start changes the work, not
    /// the optimum.
    pub fn fit(
        &self,
        lambda: f64,
        start: Option<&LogisticFit>,
    ) -> Result<LogisticFit, LogisticError> {
        if !lambda.is_finite() || lambda < 0.0 {
            return Err(LogisticError::BadLambda);
        }
        let q = self.used.len();
        let d = q + 1;
        let n = self.y.len() as f64;
        let mut theta = match start {
            // Same rows, so the same scales: the intercept and the per-deviation
            // coefficients carry over column by column (0 for a column new here).
            Some(s) if s.standardized_coefficients.len() == self.total_cols => {
                let mut t = Vec::with_capacity(d);
                t.push(s.intercept);
                t.extend(self.used.iter().map(|&j| s.standardized_coefficients[j]));
                t
            }
            _ => {
                // Start from the intercept-only optimum.
                let rate = self.y.iter().sum::<f64>() / n;
                let mut t = vec![0.0; d];
                t[0] = (rate / (1.0 - rate)).ln();
                t
            }
        };
        let mut f = self.objective(&theta, lambda);
        let mut converged = false;
        let mut iterations = 0;
        let mut grad = vec![0.0; d];
        let mut hess = vec![0.0; d * d];
        while iterations < MAX_ITERATIONS {
            iterations += 1;
            grad.iter_mut().for_each(|g| *g = 0.0);
            hess.iter_mut().for_each(|h| *h = 0.0);
            for i in 0..self.y.len() {
                let p = sigmoid(self.eta(&theta, i));
                let r = p - self.y[i];
                let w = p * (1.0 - p);
                grad[0] += r;
                hess[0] += w;
                let row = self.row(i);
                for (e, &(ka, va)) in row.iter().enumerate() {
                    let a = ka as usize + 1;
                    grad[a] += r * va;
                    let wa = w * va;
                    hess[a] += wa;
                    // Upper triangle only (entries are in column order); mirrored below.
                    let h_row = &mut hess[a * d..(a + 1) * d];
                    for &(kb, vb) in &row[e..] {
                        h_row[kb as usize + 1] += wa * vb;
                    }
                }
            }
            for a in 0..d {
                grad[a] /= n;
                for b in a..d {
                    hess[a * d + b] /= n;
                    hess[b * d + a] = hess[a * d + b];
                }
                if a > 0 {
                    grad[a] += lambda * theta[a];
                    hess[a * d + a] += lambda;
                }
            }
            let step = solve_spd(&hess, &grad, d);
            let decrement: f64 = step.iter().zip(&grad).map(|(s, g)| s * g).sum();
            if !decrement.is_finite() || decrement <= 0.0 {
                converged = decrement == 0.0;
                break;
            }
            if decrement / 2.0 < TOLERANCE {
                converged = true;
                break;
            }
            // Step halving keeps the objective falling where the quadratic model
            // overshoots (large coefficients, nearly separable data).
            let mut t = 1.0;
            let mut accepted = false;
            for _ in 0..40 {
                let candidate: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a - t * s).collect();
                let fc = self.objective(&candidate, lambda);
                if fc <= f - 1e-4 * t * decrement {
                    theta = candidate;
                    f = fc;
                    accepted = true;
                    break;
                }
                t *= 0.5;
            }
            if !accepted {
                // No descent possible at machine precision: we are at the optimum.
                converged = decrement / 2.0 < 1e-10;
                break;
            }
        }
        Ok(self.to_original(&theta, iterations, converged))
    }

    fn to_original(&self, theta: &[f64], iterations: usize, converged: bool) -> LogisticFit {
        let mut coefficients = vec![0.0; self.total_cols];
        let mut standardized_coefficients = vec![0.0; self.total_cols];
        for (k, &j) in self.used.iter().enumerate() {
            coefficients[j] = theta[k + 1] / self.sd[k];
            standardized_coefficients[j] = theta[k + 1];
        }
        LogisticFit {
            intercept: theta[0],
            coefficients,
            iterations,
            converged,
            standardized_coefficients,
        }
    }
}

/// Solves H·x = g for a symmetric positive (semi-)definite H by Cholesky,
/// adding a growing ridge if H is numerically singular.
fn solve_spd(h: &[f64], g: &[f64], d: usize) -> Vec<f64> {
    let trace: f64 = (0..d).map(|i| h[i * d + i]).sum::<f64>().max(1e-300);
    let mut jitter = 0.0;
    for _ in 0..12 {
        if let Some(l) = cholesky(h, d, jitter) {
            // Forward then back substitution.
            let mut y = vec![0.0; d];
            for i in 0..d {
                let s: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
                y[i] = (g[i] - s) / l[i * d + i];
            }
            let mut x = vec![0.0; d];
            for i in (0..d).rev() {
                let s: f64 = (i + 1..d).map(|k| l[k * d + i] * x[k]).sum();
                x[i] = (y[i] - s) / l[i * d + i];
            }
            return x;
        }
        jitter = if jitter == 0.0 {
            1e-12 * trace
        } else {
            jitter * 10.0
        };
    }
    // Hopeless: fall back to a small gradient step.
    g.iter().map(|v| v * 1e-3).collect()
}

fn cholesky(h: &[f64], d: usize, jitter: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = h[i * d + i] + jitter - s;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (h[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn logit(p: f64) -> f64 {
        (p / (1.0 - p)).ln()
    }

    #[test]
    fn one_binary_predictor_matches_the_closed_form() {
        // Group x=0: 30 of 100 churned; group x=1: 60 of 80. The unpenalised
        // MLE is the two groups' log-odds.
        let mut x = Design::new(1);
        let mut y = Vec::new();
        for (value, n, pos) in [(0.0, 100, 30), (1.0, 80, 60)] {
            for i in 0..n {
                x.push_row(&[value]).expect("row");
                y.push(i < pos);
            }
        }
        let problem = LogisticProblem::new(&x, &y, None, &[true]).expect("problem");
        let fit = problem.fit(0.0, None).expect("fit");
        assert!(fit.converged);
        assert!(
            (fit.intercept - logit(0.3)).abs() < 1e-9,
            "{}",
            fit.intercept
        );
        assert!((fit.coefficients[0] - (logit(0.75) - logit(0.3))).abs() < 1e-9);
        assert!((fit.probability(&[1.0]) - 0.75).abs() < 1e-9);
    }

    #[test]
    fn recovers_known_coefficients_on_simulated_data() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let truth = [-1.0, 0.8, -0.5, 0.0];
        let mut x = Design::new(3);
        let mut y = Vec::new();
        for _ in 0..20_000 {
            let row = [
                rng.random_range(-2.0..2.0),
                rng.random_range(0.0..5.0),
                if rng.random_bool(0.3) { 1.0 } else { 0.0 },
            ];
            let eta = truth[0] + truth[1] * row[0] + truth[2] * row[1] + truth[3] * row[2];
            y.push(rng.random_bool(sigmoid(eta)));
            x.push_row(&row).expect("row");
        }
        let fit = LogisticProblem::new(&x, &y, None, &[true; 3])
            .and_then(|p| p.fit(0.0, None))
            .expect("fit");
        assert!(fit.converged);
        assert!((fit.intercept - truth[0]).abs() < 0.1, "{fit:?}");
        for j in 0..3 {
            assert!((fit.coefficients[j] - truth[j + 1]).abs() < 0.1, "{fit:?}");
        }
    }

    #[test]
    fn penalty_shrinks_towards_the_base_rate_and_inactive_columns_stay_zero() {
        let mut x = Design::new(2);
        let mut y = Vec::new();
        for i in 0..200 {
            let v = f64::from(i % 10);
            x.push_row(&[v, 3.0]).expect("row");
            y.push(i % 10 >= 6 || i % 7 == 0);
        }
        let problem = LogisticProblem::new(&x, &y, None, &[true, true]).expect("problem");
        let weak = problem.fit(1e-4, None).expect("fit");
        let strong = problem.fit(1e4, Some(&weak)).expect("fit");
        assert!(strong.coefficients[0].abs() < weak.coefficients[0].abs() / 100.0);
        let rate = y.iter().filter(|v| **v).count() as f64 / y.len() as f64;
        assert!((strong.probability(&[4.5, 3.0]) - rate).abs() < 0.01);
        // The constant column gets no coefficient.
        assert_eq!(weak.coefficients[1], 0.0);
        let off = LogisticProblem::new(&x, &y, None, &[false, true])
            .and_then(|p| p.fit(0.0, None))
            .expect("fit");
        assert_eq!(off.coefficients, vec![0.0, 0.0]);
        assert!((sigmoid(off.intercept) - rate).abs() < 1e-9);
    }

    #[test]
    fn separable_data_stays_finite_with_a_penalty() {
        let mut x = Design::new(1);
        let mut y = Vec::new();
        for i in 0..20 {
            x.push_row(&[f64::from(i)]).expect("row");
            y.push(i >= 10);
        }
        let fit = LogisticProblem::new(&x, &y, None, &[true])
            .and_then(|p| p.fit(1e-3, None))
            .expect("fit");
        assert!(fit.coefficients[0].is_finite() && fit.coefficients[0] > 0.0);
        assert!(fit.probability(&[19.0]) > 0.9 && fit.probability(&[0.0]) < 0.1);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut x = Design::new(2);
        assert!(x.push_row(&[1.0]).is_err());
        assert!(x.push_row(&[1.0, f64::NAN]).is_err());
        x.push_row(&[1.0, 2.0]).expect("row");
        x.push_row(&[2.0, 2.0]).expect("row");
        assert_eq!(
            LogisticProblem::new(&x, &[true, true], None, &[true, true]).err(),
            Some(LogisticError::SingleClass(true))
        );
        assert!(LogisticProblem::new(&x, &[true], None, &[true, true]).is_err());
        let p = LogisticProblem::new(&x, &[true, false], None, &[true, true]).expect("problem");
        assert_eq!(p.fit(-1.0, None).err(), Some(LogisticError::BadLambda));
    }
}

#!/usr/bin/env python3
"""Baselines on the same events, labels and cutoff as `churn-scorer backtest`:

- recency alone: days since the customer's last event before the cutoff;
- BG/NBD (Fader, Hardie & Lee 2005), population parameters r, alpha, a, b
  fitted by maximum likelihood on the history before the cutoff, scored two
  ways: 1 - P(alive) and minus the expected number of transactions in the
  label window.

ROC AUC as the backtest computes it (Mann-Whitney with average ranks);
labelled customers without events before the cutoff rank below every scored
customer. Repeat transactions are counted in distinct days (the BTYD
convention), time in days. Needs numpy and scipy:

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install numpy scipy
    /tmp/venv/bin/python benches/datasets/baselines.py --events E.jsonl \
        --labels L.csv --cutoff 1997-10-01T00:00:00Z --window-days 273
"""

import argparse
import csv
import json
from datetime import datetime

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1
from scipy.stats import rankdata

DAY_MS = 86_400_000


def parse_ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def auc(scores, labels) -> float:
    scores = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    ranks = rankdata(scores)
    p, n = y.sum(), (~y).sum()
    return float((ranks[y].sum() - p * (p + 1) / 2) / (p * n))


def bgnbd_ll(params, x, tx, T):
    r, alpha, a, b = np.exp(params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + tx), -np.inf)
    return -(a1 + a2 + np.logaddexp(a3, a4)).sum()


def fit_bgnbd(x, tx, T):
    best = None
    for start in ([0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, -1.0, 0.5], [0.5, 3.0, 0.0, 1.0]):
        # Log-parameters bounded so that a degenerate history (no dropout,
        # one common rate) ends at a finite edge instead of running away.
        res = minimize(bgnbd_ll, np.array(start), args=(x, tx, T), method="L-BFGS-B",
                       bounds=[(-10.0, 12.0)] * 4, options={"maxiter": 500})
        if best is None or res.fun < best.fun:
            best = res
    return np.exp(best.x)


def p_alive(params, x, tx, T):
    r, alpha, a, b = params
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.where(x > 0, a / np.maximum(b + x - 1, 1e-300) * ((alpha + T) / (alpha + tx)) ** (r + x), 0.0)
    return 1.0 / (1.0 + odds)


def expected(params, x, tx, T, t):
    r, alpha, a, b = params
    z = t / (alpha + T + t)
    head = (a + b + x - 1) / (a - 1)
    body = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
    return head * body * p_alive(params, x, tx, T)


def p_none(params, x, tx, T, t):
    """P(no transaction in the next t | history): dead, or alive and quiet
    (the gamma posterior of the rate: shape r + x, rate alpha + T)."""
    r, alpha, a, b = params
    quiet = ((alpha + T) / (alpha + T + t)) ** (r + x)
    return 1 - p_alive(params, x, tx, T) * (1 - quiet)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--events", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--cutoff", required=True)
    p.add_argument("--window-days", type=float, required=True)
    args = p.parse_args()
    cutoff = parse_ms(args.cutoff)
    first, last, days = {}, {}, {}
    with open(args.events) as f:
        for line in f:
            e = json.loads(line)
            t = parse_ms(e["timestamp"])
            if t >= cutoff:
                continue
            c = e["customer_id"]
            first[c] = min(first.get(c, t), t)
            last[c] = max(last.get(c, t), t)
            days.setdefault(c, set()).add(t // DAY_MS)
    with open(args.labels) as f:
        rows = [(r[0], r[1].strip() in ("1", "true")) for r in csv.reader(f) if r and r[0] != "customer_id"]
    ids = [c for c, _ in rows]
    y = np.array([churned for _, churned in rows])
    seen = np.array([c in first for c in ids])
    cs = [c for c in ids if c in first]
    # BG/NBD on every customer seen before the cutoff (labelled or not).
    allc = list(first)
    xa = np.array([len(days[c]) - 1 for c in allc], dtype=float)
    ta = np.array([(last[c] - first[c]) / DAY_MS for c in allc])
    Ta = np.array([(cutoff - first[c]) / DAY_MS for c in allc])
    params = fit_bgnbd(xa, ta, Ta)
    x = np.array([len(days[c]) - 1 for c in cs], dtype=float)
    tx = np.array([(last[c] - first[c]) / DAY_MS for c in cs])
    T = np.array([(cutoff - first[c]) / DAY_MS for c in cs])
    lowest = -1e300

    def full(scored):
        s = np.full(len(ids), lowest)
        s[seen] = scored
        return s

    recency = full((cutoff - np.array([last[c] for c in cs])) / DAY_MS)
    dead = full(1 - p_alive(params, x, tx, T))
    exp_neg = full(-expected(params, x, tx, T, args.window_days))
    pop_gap = params[1] / params[0]
    none_window = full(p_none(params, x, tx, T, args.window_days))
    none_pop = full(p_none(params, x, tx, T, pop_gap))
    print(json.dumps({
        "labelled": len(ids), "churned": int(y.sum()), "without_events": int((~seen).sum()),
        "recency_auc": round(auc(recency, y), 4),
        "bgnbd_palive_auc": round(auc(dead, y), 4),
        "bgnbd_expected_auc": round(auc(exp_neg, y), 4),
        "bgnbd_p_none_window_auc": round(auc(none_window, y), 4),
        "bgnbd_p_none_pop_gap_auc": round(auc(none_pop, y), 4),
        "population_gap_days": round(float(pop_gap), 2),
        "bgnbd_params": {k: round(float(v), 4) for k, v in zip(("r", "alpha", "a", "b"), params)},
    }))


if __name__ == "__main__":
    main()

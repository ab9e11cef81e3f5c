#!/usr/bin/env python3
"""The evaluation table of docs/model.md ("How the default model holds up"):
for every converted history (convert.py) and every generator shape, ROC AUC
at the cutoff of recency alone and BG/NBD (baselines.py), the previous
default, the current default, any candidate model files, and `fit`'s
out-of-fold AUC; with the at-risk alerts at the cutoff of each model.

    cargo build --release
    python3 benches/datasets/convert.py --out /tmp/churn-datasets
    /tmp/venv/bin/python benches/datasets/evaluate.py --data /tmp/churn-datasets \
        [--model NAME=FILE ...] [--only cdnow-39w,sparse] [--no-fit]

Runs `target/release/churn-scorer` (backtest --json, fit, generate) and
baselines.py with the same interpreter; prints one JSON object per dataset,
then a markdown table.
"""

import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("CHURN_SCORER", os.path.join(ROOT, "target", "release", "churn-scorer"))

# (name, cutoff, label window in days, generator arguments or None for converted data)
DATASETS = [
    ("cdnow-39w", "1997-10-01T00:00:00Z", 273, None),
    ("cdnow-1998", "1998-01-01T00:00:00Z", 181, None),
    ("lifetimes-example", "2014-09-01T00:00:00Z", 122, None),
    ("retentioneering-ecom", "2024-05-15T00:00:00Z", 47, None),
    ("journeys", "2025-05-31T00:00:00Z", 30, ["--shape", "journeys", "--customers", "5000", "--seed", "3"]),
    ("sparse", "2025-05-31T00:00:00Z", 30, ["--shape", "sparse", "--customers", "20000", "--seed", "13"]),
    ("mixed", "2025-05-31T00:00:00Z", 30, ["--shape", "mixed", "--customers", "20000", "--seed", "13"]),
    ("purchases", "2025-09-28T00:00:00Z", 180,
     ["--shape", "purchases", "--customers", "20000", "--seed", "21", "--days", "450", "--cutoff-days", "270"]),
]


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def backtest(events, labels, cutoff, model):
    cmd = [BIN, "backtest", "--events", events, "--labels", labels, "--cutoff", cutoff, "--json"]
    if model:
        cmd += ["--model", model]
    out = json.loads(run(cmd))
    a = out["alerts"]
    return {"auc": out["roc_auc"], "alerted": a["share"], "precision": a["precision"], "recall": a["recall"]}


def fit(events, labels, cutoff, out):
    run([BIN, "fit", "--events", events, "--labels", labels, "--cutoff", cutoff, "--out", out])
    with open(out) as f:
        text = f.read()
    m = re.search(r"out of fold: this model AUC ([0-9.]+); logistic regression on recency, "
                  r"frequency, spend and tenure AUC ([0-9.]+)", text)
    return {"fit_cv_auc": float(m.group(1)), "logistic_cv_auc": float(m.group(2))} if m else {}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--model", action="append", default=[], help="NAME=FILE, a candidate model")
    p.add_argument("--only", default="")
    p.add_argument("--no-fit", action="store_true")
    p.add_argument("--learned-prior", action="store_true",
                   help="also score the default with its rhythm prior replaced by the population's pace "
                        "of this history (BG/NBD's r and alpha: prior_events = r, prior_gap_days = alpha / r)")
    args = p.parse_args()
    only = set(filter(None, args.only.split(",")))
    models = [("previous", os.path.join(ROOT, "tests/fixtures/model-default-2026.11.toml")),
              ("default", None)] + [tuple(m.split("=", 1)) for m in args.model]
    rows = []
    for name, cutoff, window, gen in DATASETS:
        if only and name not in only:
            continue
        events = os.path.join(args.data, f"{name}.jsonl")
        labels = os.path.join(args.data, f"{name}.labels.csv")
        if gen and not os.path.exists(events):
            run([BIN, "generate", *gen, "--out", events, "--labels", labels])
        row = {"dataset": name, "cutoff": cutoff}
        row.update(json.loads(run([sys.executable, os.path.join(HERE, "baselines.py"), "--events", events,
                                   "--labels", labels, "--cutoff", cutoff, "--window-days", str(window)])))
        for mname, mfile in models:
            row[mname] = backtest(events, labels, cutoff, mfile)
        if args.learned_prior:
            bg = row["bgnbd_params"]
            r, alpha = min(bg["r"], 1e6), min(bg["alpha"], 1e9)
            with open(os.path.join(ROOT, "config", "model.toml")) as f:
                text = f.read()
            text = re.sub(r"(?m)^prior_gap_days = .*$", f"prior_gap_days = {alpha / r!r}", text)
            text = re.sub(r"(?m)^prior_events = .*$", f"prior_events = {r!r}", text)
            learned = os.path.join(args.data, f"{name}.learned-prior.toml")
            with open(learned, "w") as f:
                f.write(text)
            row["learned-prior"] = backtest(events, labels, cutoff, learned)
        if not args.no_fit:
            row.update(fit(events, labels, cutoff, os.path.join(args.data, f"{name}.fitted.toml")))
        print(json.dumps(row), flush=True)
        rows.append(row)
    names = [m for m, _ in models] + (["learned-prior"] if args.learned_prior else [])
    print()
    print("| dataset | customers (churned) | recency | BG/NBD E[X] | BG/NBD P(alive) | "
          + " | ".join(names) + " | fit (out of fold) | logistic RFM (out of fold) |")
    print("|---|---|---|---|---|" + "---|" * len(names) + "---|---|")
    for r in rows:
        cells = [r["dataset"], f"{r['labelled']} ({r['churned'] / r['labelled']:.1%})",
                 f"{r['recency_auc']:.4f}", f"{r['bgnbd_expected_auc']:.4f}", f"{r['bgnbd_palive_auc']:.4f}"]
        cells += [f"{r[m]['auc']:.4f}" for m in names]
        cells += [f"{r.get('fit_cv_auc', float('nan')):.4f}", f"{r.get('logistic_cv_auc', float('nan')):.4f}"]
        print("| " + " | ".join(cells) + " |")
    print()
    print("alerts at the cutoff (share of labelled customers at or above the model's at-risk threshold; precision; recall):")
    print("| dataset | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for r in rows:
        def show(a):
            f = lambda v: "n/a" if v is None else f"{v:.2f}"
            return f"{a['alerted']:.1%}; {f(a['precision'])}; {f(a['recall'])}"
        print("| " + r["dataset"] + " | " + " | ".join(show(r[m]) for m in names) + " |")


if __name__ == "__main__":
    main()

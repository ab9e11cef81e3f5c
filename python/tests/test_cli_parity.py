"""The package's numbers are the CLI's, to the digit, on the same files.

Exact comparisons only: the JSON text the CLI prints against the text the
package returns, and parsed values with ``==`` (floats included).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

import churn_scorer
from conftest import Cli, Dataset, read_lines


def _records(path: Path) -> list:
    return [json.loads(line) for line in read_lines(path)]


def _cli_bad_lines(stderr: str) -> list:
    """`line N: reason: message` lines of the CLI's standard error."""
    out = []
    for line in stderr.splitlines():
        m = re.match(r"^line (\d+): ([a-z_]+): (.*)$", line)
        if m:
            out.append((int(m.group(1)), m.group(2), m.group(3)))
    return out


def test_score_of_a_file_is_the_cli_output_byte_for_byte(cli: Cli, journeys: Dataset) -> None:
    expected = cli.run("score", "--events", str(journeys.events)).stdout
    assert expected.count("\n") == 300
    assert churn_scorer.score_jsonl(journeys.events) == expected


def test_score_as_of_and_model_file_match_the_cli(
    cli: Cli, journeys: Dataset, tmp_path: Path
) -> None:
    model = tmp_path / "model.toml"
    # A model other than the default: a steeper score curve.
    default_text = churn_scorer.Model.default().to_toml()
    text = default_text.replace("scale = 10.0", "scale = 7.0", 1)
    assert text != default_text
    model.write_text(text)
    expected = cli.run(
        "score", "--events", str(journeys.events), "--model", str(model), "--as-of", "2025-04-15"
    ).stdout
    got = churn_scorer.score_jsonl(journeys.events, model=model, as_of="2025-04-15")
    assert got == expected
    assert got != churn_scorer.score_jsonl(journeys.events, as_of="2025-04-15")
    assert got != churn_scorer.score_jsonl(journeys.events, model=model)


def test_score_of_a_dataframe_equals_the_cli_on_its_file(cli: Cli, journeys: Dataset) -> None:
    expected = [json.loads(l) for l in cli.run("score", "--events", str(journeys.events)).stdout.splitlines()]
    events = pd.DataFrame.from_records(_records(journeys.events))
    # pandas date-times (UTC) instead of the file's text: converted back exactly.
    events["timestamp"] = pd.to_datetime(events["timestamp"], utc=True, format="ISO8601")
    frame = churn_scorer.score(events)
    assert list(frame.columns) == list(churn_scorer.SCORE_COLUMNS)
    assert frame.to_dict("records") == expected
    assert frame.attrs["replay"]["accepted"] == len(events)


def test_score_of_dicts_equals_the_cli(cli: Cli, journeys: Dataset) -> None:
    expected = [json.loads(l) for l in cli.run("score", "--events", str(journeys.events)).stdout.splitlines()]
    assert churn_scorer.score_records(iter(_records(journeys.events))) == expected


def test_bad_lines_are_skipped_as_the_cli_reports_them(cli: Cli, dirty: Dataset) -> None:
    proc = cli.run("score", "--events", str(dirty.events))
    cli_bad = _cli_bad_lines(proc.stderr)
    assert len(cli_bad) > 5, proc.stderr[:500]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = churn_scorer.score_jsonl(dirty.events)
    assert got == proc.stdout
    skipped = [w.message for w in caught if issubclass(w.category, churn_scorer.SkippedRowsWarning)]
    assert len(skipped) == 1
    rows = skipped[0].skipped  # type: ignore[attr-defined]
    assert [(s.line, s.reason, s.message) for s in rows] == cli_bad
    assert all(s.row is None for s in rows), "a file has lines, not rows"


def test_backtest_json_and_tables_match_the_cli(cli: Cli, journeys: Dataset) -> None:
    args = ["backtest", "--events", str(journeys.events), "--labels", str(journeys.labels), "--cutoff", journeys.cutoff]
    expected_json = cli.run(*args, "--json").stdout
    expected_text = cli.run(*args).stdout
    result = churn_scorer.backtest(journeys.events, journeys.labels, journeys.cutoff)
    assert result.to_json() == expected_json
    assert result.text() == expected_text
    assert result.summary == json.loads(expected_json)
    assert result.roc_auc == json.loads(expected_json)["roc_auc"]
    assert 0.5 < result.roc_auc < 1.0


def test_backtest_from_dataframes_and_targets_match_the_cli(cli: Cli, journeys: Dataset) -> None:
    expected = cli.run(
        "backtest", "--events", str(journeys.events), "--labels", str(journeys.labels),
        "--cutoff", journeys.cutoff, "--json", "--alert-precision", "0.7", "--alert-rate", "0.1",
    ).stdout
    events = pd.DataFrame.from_records(_records(journeys.events))
    labels = pd.read_csv(journeys.labels, dtype={"customer_id": str})
    result = churn_scorer.backtest(
        events, labels, pd.Timestamp(journeys.cutoff), alert_precision=0.7, alert_rate=0.1
    )
    assert result.to_json() == expected
    # Re-targeting afterwards chooses what the CLI flags would have.
    default = churn_scorer.backtest(events, labels, journeys.cutoff)
    assert default.to_json() != expected
    assert default.with_targets(0.7, 0.1).to_json() == expected
    summary = json.loads(expected)["thresholds"]
    assert default.choose_threshold(precision=0.7) == summary["for_precision"]
    assert default.choose_threshold(rate=0.1) == summary["for_rate"]


def test_backtest_report_matches_the_cli(cli: Cli, journeys: Dataset, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    cli.run(
        "backtest", "--events", str(journeys.events), "--labels", str(journeys.labels),
        "--cutoff", journeys.cutoff, "--report", str(report),
    )
    result = churn_scorer.backtest(journeys.events, journeys.labels, journeys.cutoff)
    assert result.html() == report.read_text(encoding="utf-8")


def _fit_cli(cli: Cli, data: Dataset, out: Path, *extra: str) -> tuple:
    proc = cli.run(
        "fit", "--events", str(data.events), "--labels", str(data.labels),
        "--cutoff", data.cutoff, "--out", str(out), *extra,
    )
    text = out.read_text(encoding="utf-8")
    date = re.search(r"fitted by `churn-scorer fit` on (\d{4}-\d{2}-\d{2})\.", text)
    assert date, text[:300]
    return proc.stdout, text, date.group(1)


def test_fit_writes_the_cli_model_file(cli: Cli, journeys: Dataset, tmp_path: Path) -> None:
    report = tmp_path / "fit.html"
    stdout, expected, date = _fit_cli(cli, journeys, tmp_path / "fitted.toml", "--report", str(report))
    result = churn_scorer.fit(journeys.events, journeys.labels, journeys.cutoff, generated_on=date)
    assert result.to_toml() == expected
    assert result.description + [
        f"model written to {tmp_path / 'fitted.toml'}",
        f"report written to {report}",
    ] == stdout.splitlines()
    assert result.html() == report.read_text(encoding="utf-8")
    assert result.model.version == "fit-2025-05-31"
    # The fitted model backtests exactly as the CLI does with the written file.
    bt_cli = cli.run(
        "backtest", "--events", str(journeys.events), "--labels", str(journeys.labels),
        "--cutoff", journeys.cutoff, "--model", str(tmp_path / "fitted.toml"), "--json",
    ).stdout
    assert churn_scorer.backtest(journeys.events, journeys.labels, journeys.cutoff, model=result.model).to_json() == bt_cli


def test_fit_options_and_base_model_match_the_cli(cli: Cli, journeys: Dataset, tmp_path: Path) -> None:
    base = tmp_path / "base.toml"
    base.write_text(churn_scorer.Model.default().to_toml())
    stdout, expected, date = _fit_cli(
        cli, journeys, tmp_path / "fitted.toml", "--base", str(base), "--keep-half-lives",
        "--alert-precision", "0.6", "--folds", "4", "--seed", "3", "--model-version", "tuned",
        "--lambdas", "0.001,0.1", "--one-standard-error",
    )
    events = pd.DataFrame.from_records(_records(journeys.events))
    labels = dict(pd.read_csv(journeys.labels, dtype={"customer_id": str}).itertuples(index=False))
    result = churn_scorer.fit(
        events, labels, journeys.cutoff, base=str(base), keep_half_lives=True,
        alert_precision=0.6, folds=4, seed=3, model_version="tuned", lambdas=[0.001, 0.1],
        one_standard_error=True, generated_on=date,
    )
    assert result.to_toml() == expected
    assert result.model.version == "tuned"
    assert result.summary["lambda_rule"] == "one-standard-error"

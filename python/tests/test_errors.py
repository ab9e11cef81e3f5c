"""Errors are Python exceptions naming the row and the reason; skipped rows
are reported; the model and its text. No CLI needed."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import pandas as pd
import pytest

import churn_scorer
from churn_scorer import (
    ArgumentError,
    ChurnScorerError,
    EventError,
    Model,
    ModelError,
    NoEventsError,
    SkippedRowsWarning,
)


def _events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "a", None],
            "event_type": ["login", "purchase", "support_ticket", "login"],
            "timestamp": [
                "2025-03-01T10:00:00Z",
                "2025-03-02T10:00:00Z",
                "2025-03-03T10:00:00Z",
                "2025-03-04T10:00:00Z",
            ],
            "amount": [None, 25.5, None, None],
        },
        index=["e1", "e2", "e3", "e4"],
    )


def test_strict_raises_event_error_naming_row_index_and_reason() -> None:
    with pytest.raises(EventError) as caught:
        churn_scorer.score(_events(), strict=True)
    e = caught.value
    assert (e.row, e.index, e.line, e.reason) == (3, "e4", 4, "missing_field")
    assert "customer_id" in e.message
    assert str(e) == "row 3 (index 'e4'): missing_field: missing field `customer_id`"
    assert isinstance(e, ChurnScorerError) and isinstance(e, ValueError)


def test_strict_error_of_a_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"customer_id":"a","event_type":"login","timestamp":"2025-03-01T10:00:00Z"}\n'
        '{"customer_id":"a","event_type":"login","timestamp":"yesterday"}\n'
    )
    with pytest.raises(EventError) as caught:
        churn_scorer.score_jsonl(path, strict=True)
    assert (caught.value.line, caught.value.row, caught.value.reason) == (2, None, "bad_timestamp")
    assert str(caught.value).startswith("line 2: bad_timestamp: ")


def test_without_strict_bad_rows_are_skipped_with_a_warning_listing_them() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = churn_scorer.score(_events())
    assert list(frame.customer_id) == ["a", "b"]
    (w,) = [w for w in caught if w.category is SkippedRowsWarning]
    assert "1 event rows skipped: row 3: missing_field" in str(w.message)
    (skipped,) = w.message.skipped  # type: ignore[attr-defined]
    assert (skipped.row, skipped.index, skipped.reason) == (3, "e4", "missing_field")
    assert frame.attrs["replay"]["rejected"] == {"missing_field": 1}
    assert frame.attrs["replay"]["skipped_rows"] == 1


def test_dicts_name_their_position() -> None:
    rows = [
        {"customer_id": "a", "event_type": "login", "timestamp": "2025-03-01T10:00:00Z"},
        {"customer_id": "a", "event_type": "purchase", "timestamp": "2025-03-01T11:00:00Z", "amount": -3},
    ]
    with pytest.raises(EventError) as caught:
        churn_scorer.score_records(rows, strict=True)
    assert (caught.value.row, caught.value.index, caught.value.reason) == (1, None, "bad_amount")
    assert str(caught.value).startswith("row 1: bad_amount: ")


def test_a_value_json_cannot_hold_is_an_event_error_naming_the_row() -> None:
    rows = [{"customer_id": "a", "event_type": "login", "timestamp": "2025-03-01T10:00:00Z", "properties": {"x": {1, 2}}}]
    with pytest.raises(EventError) as caught:
        churn_scorer.score_records(rows)
    assert (caught.value.row, caught.value.reason) == (0, "unsupported_value")


def test_integer_ids_are_rejected_as_the_cli_rejects_them() -> None:
    # JSON numbers are not customer ids for the CLI; no silent str() here.
    rows = [{"customer_id": 7, "event_type": "login", "timestamp": "2025-03-01T10:00:00Z"}]
    with pytest.raises(EventError) as caught:
        churn_scorer.score_records(rows, strict=True)
    assert caught.value.reason == "bad_customer_id"


def test_missing_column_is_an_argument_error() -> None:
    with pytest.raises(ArgumentError, match="no column 'timestamp'"):
        churn_scorer.score(_events().drop(columns=["timestamp"]))


def test_no_event_at_all_warns_and_strict_raises() -> None:
    empty = _events().iloc[:0]
    with pytest.warns(SkippedRowsWarning, match="no events scored: the input is empty"):
        frame = churn_scorer.score(empty)
    assert len(frame) == 0 and list(frame.columns) == list(churn_scorer.SCORE_COLUMNS)
    with pytest.raises(NoEventsError, match="the input is empty"):
        churn_scorer.score(empty, strict=True)


def test_pandas_datetimes_naive_and_zoned_are_the_same_instant() -> None:
    base = _events().iloc[:3]
    zoned = base.assign(timestamp=pd.to_datetime(base.timestamp, utc=True).dt.tz_convert("Europe/Paris"))
    naive = base.assign(timestamp=pd.to_datetime(base.timestamp, utc=True).dt.tz_localize(None))
    expected = churn_scorer.score(base)
    pd.testing.assert_frame_equal(churn_scorer.score(zoned), expected)
    pd.testing.assert_frame_equal(churn_scorer.score(naive), expected)
    assert expected.last_event_at.tolist() == ["2025-03-03T10:00:00.000Z", "2025-03-02T10:00:00.000Z"]


def test_as_of_accepts_dates_and_datetimes_like_the_cli() -> None:
    events = _events().iloc[:3]
    by_text = churn_scorer.score_jsonl(events, as_of="2025-03-02")
    assert churn_scorer.score_jsonl(events, as_of=dt.date(2025, 3, 2)) == by_text
    assert churn_scorer.score_jsonl(events, as_of=dt.datetime(2025, 3, 2)) == by_text
    assert churn_scorer.score_jsonl(events, as_of=pd.Timestamp("2025-03-02", tz="UTC")) == by_text
    # Only the events at or before the as-of count: b's purchase is after midnight.
    assert [r["customer_id"] for r in churn_scorer.score_records(events, as_of="2025-03-02")] == ["a"]
    with pytest.raises(ArgumentError, match="as_of: cannot read"):
        churn_scorer.score(events, as_of="last tuesday")


def test_model_errors_name_the_key(tmp_path: Path) -> None:
    text = Model.default().to_toml().replace("at_risk_threshold = 75.0", "at_risk_threshold = 175.0")
    with pytest.raises(ModelError) as caught:
        Model.from_toml(text)
    assert caught.value.key == "alert.at_risk_threshold"
    bad = tmp_path / "bad.toml"
    bad.write_text("model_version = \n")
    with pytest.raises(ModelError) as caught:
        Model.load(bad)
    assert caught.value.key == ""
    with pytest.raises(FileNotFoundError, match="cannot read model file"):
        Model.load(tmp_path / "absent.toml")
    with pytest.raises(FileNotFoundError, match="opening events file"):
        churn_scorer.score_jsonl(tmp_path / "absent.jsonl")


def test_model_text_roundtrips_and_names_its_source(tmp_path: Path) -> None:
    default = Model.default()
    assert default.source == "built-in default"
    assert default.version == "default-2026.12"
    path = tmp_path / "m.toml"
    path.write_text(default.to_toml())
    loaded = Model.load(path)
    assert (loaded.version, loaded.source, loaded.to_toml()) == (default.version, str(path), default.to_toml())
    assert '"model_version":"default-2026.12"' in loaded.to_json()


def test_label_rows_are_checked_by_the_cli_reader() -> None:
    events = _events().iloc[:3]
    labels = pd.DataFrame({"customer_id": ["a", "b", "a", ""], "churned": [1, 0, 0, 1]}, index=[10, 11, 12, 13])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = churn_scorer.backtest(events, labels, "2025-03-10")
    assert [(s.row, s.index) for s in result.skipped_labels] == [(2, 12), (3, 13)]
    assert "duplicate customer_id" in result.skipped_labels[0].message
    assert result.skipped_labels[1].message == "empty customer_id"
    assert any(w.category is SkippedRowsWarning and "2 label rows skipped" in str(w.message) for w in caught)
    assert result.summary["counts"]["labelled"] == 2
    assert result.summary["counts"]["label_rows_rejected"] == 2


def test_bad_arguments_raise_argument_error() -> None:
    events = _events().iloc[:3]
    with pytest.raises(ArgumentError, match="cutoff"):
        churn_scorer.backtest(events, {"a": 1, "b": 0}, "soon")
    with pytest.raises(ArgumentError, match="alert_precision must be a share"):
        churn_scorer.backtest(events, {"a": 1, "b": 0}, "2025-03-10", alert_precision=60)
    with pytest.raises(ArgumentError, match="not both"):
        churn_scorer.fit(events, {"a": 1, "b": 0}, "2025-03-10", alert_precision=0.5, alert_rate=0.1)
    with pytest.raises(ArgumentError, match="need at least 5 churned"):
        churn_scorer.fit(events, {"a": True, "b": False}, "2025-03-10")


def test_without_pandas_the_package_imports_and_records_work() -> None:
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys
        sys.modules["pandas"] = None  # import pandas now raises ImportError
        import churn_scorer as cs
        rows = [{"customer_id": "a", "event_type": "login", "timestamp": "2025-03-01T10:00:00Z"}]
        (record,) = cs.score_records(rows)
        assert record["customer_id"] == "a" and record["band"] in ("low", "medium", "high"), record
        assert cs.score_jsonl(rows).startswith('{"customer_id":"a"')
        try:
            cs.score(rows)
        except ImportError as e:
            assert "pip install pandas" in str(e), e
        else:
            raise AssertionError("score() without pandas must say how to get it")
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr

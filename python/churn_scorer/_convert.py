"""Conversion between Python data and the command line's file formats.

Events become JSON lines and labels a CSV, byte for byte what the
``churn-scorer`` command reads, and the extension module runs the CLI's own
code on them. Nothing here looks at what an event means: a value the engine
would reject is passed through for the engine to reject, with the same
reason as the CLI gives.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

from ._errors import ArgumentError, EventError

EVENT_FIELDS = ("customer_id", "event_type", "timestamp", "amount", "properties")
REQUIRED_EVENT_FIELDS = ("customer_id", "event_type", "timestamp")

PathLike = Union[str, "os.PathLike[str]"]


def pandas_or_none() -> Any:
    try:
        import pandas
    except ImportError:
        return None
    return pandas


def require_pandas(what: str) -> Any:
    pandas = pandas_or_none()
    if pandas is None:
        raise ImportError(
            f"{what} returns a pandas DataFrame: pip install pandas "
            "(or use score_records / score_jsonl, which need no pandas)"
        )
    return pandas


def is_dataframe(obj: Any) -> bool:
    pandas = pandas_or_none()
    return pandas is not None and isinstance(obj, pandas.DataFrame)


def is_series(obj: Any) -> bool:
    pandas = pandas_or_none()
    return pandas is not None and isinstance(obj, pandas.Series)


class SkippedRow(NamedTuple):
    """A row the run rejected and skipped (without ``strict``)."""

    #: 1-based line of the JSON-lines or CSV input the Rust side read.
    line: int
    #: 0-based position in the DataFrame / iterable given (None for a file).
    row: Optional[int]
    #: DataFrame index label of that row (None for other inputs).
    index: Any
    #: The engine's reason label (``missing_field``, ...); None for labels.
    reason: Optional[str]
    #: What is wrong.
    message: str


class Rows:
    """Maps a line of the converted input back to the caller's row.

    ``first_line`` is the line of row 0 (1 for events, 2 for labels after
    the CSV header); ``index`` the DataFrame's index labels, if any.
    A file or bytes given as such has no rows: lines stay lines.
    """

    def __init__(self, first_line: Optional[int], index: Optional[Sequence[Any]] = None):
        self.first_line = first_line
        self.index = index

    def locate(self, line: int) -> Tuple[Optional[int], Any]:
        if self.first_line is None:
            return None, None
        row = line - self.first_line
        if row < 0:
            return None, None
        label = self.index[row] if self.index is not None and row < len(self.index) else None
        return row, label

    def skipped(self, line: int, reason: Optional[str], message: str) -> SkippedRow:
        row, label = self.locate(line)
        return SkippedRow(line, row, label, reason, message)

    def event_error(self, err: EventError) -> EventError:
        row, label = self.locate(err.line)
        return EventError(err.line, err.reason, err.message, row, label)


FILE = Rows(None)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    pandas = pandas_or_none()
    if pandas is not None and (value is pandas.NA or value is pandas.NaT):
        return True
    return False


def _timestamp_text(value: _dt.datetime) -> str:
    # A naive date-time is taken as UTC, as the CLI's --as-of and --cutoff do.
    if value.tzinfo is None:
        return value.isoformat() + "Z"
    return value.isoformat()


def _json_default(value: Any) -> Any:
    """json.dumps hook for what pandas and numpy put in rows."""
    if isinstance(value, _dt.datetime):
        return _timestamp_text(value)
    if isinstance(value, _dt.date):
        return value.isoformat() + "T00:00:00Z"
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        converted = item()
        if converted is not value:
            return None if _missing(converted) else converted
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _plain(value: Any) -> Any:
    """A row value as json.dumps should see it: missing values become null."""
    if _missing(value):
        return None
    if isinstance(value, _dt.datetime):
        return _timestamp_text(value)
    if type(value).__module__ == "numpy":
        return _json_default(value)
    return value


def _dump_row(position: int, index: Any, row: Mapping[str, Any]) -> str:
    try:
        return json.dumps(row, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise EventError(position + 1, "unsupported_value", str(e), position, index) from None


def _timestamp_column(frame: Any, name: str) -> List[Any]:
    """A timestamp column as RFC 3339 text where pandas holds date-times
    (vectorised; naive ones are taken as UTC), otherwise as given."""
    pandas = require_pandas("events")
    column = frame[name]
    if pandas.api.types.is_datetime64_any_dtype(column.dtype):
        utc = column.dt.tz_localize("UTC") if column.dt.tz is None else column.dt.tz_convert("UTC")
        # Microseconds: the engine keeps milliseconds, rounding down either way.
        text = utc.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return [None if _missing(v) else v for v in text.tolist()]
    return column.tolist()


def events_from_frame(frame: Any) -> Tuple[bytes, Rows]:
    missing = [c for c in REQUIRED_EVENT_FIELDS if c not in frame.columns]
    if missing:
        raise ArgumentError(
            f"events DataFrame has no column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(map(str, frame.columns))}); expected {', '.join(EVENT_FIELDS)}"
        )
    fields = [c for c in EVENT_FIELDS if c in frame.columns]
    columns = [
        _timestamp_column(frame, c) if c == "timestamp" else frame[c].tolist() for c in fields
    ]
    index = frame.index.tolist()
    out = io.StringIO()
    for position, values in enumerate(zip(*columns)):
        row = {name: _plain(v) for name, v in zip(fields, values)}
        out.write(_dump_row(position, index[position], row))
        out.write("\n")
    return out.getvalue().encode("utf-8"), Rows(1, index)


def events_from_records(records: Iterable[Mapping[str, Any]]) -> Tuple[bytes, Rows]:
    out = io.StringIO()
    for position, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ArgumentError(
                f"events: row {position} is a {type(record).__name__}, not a dict"
            )
        row = {name: _plain(v) for name, v in record.items()}
        out.write(_dump_row(position, None, row))
        out.write("\n")
    return out.getvalue().encode("utf-8"), Rows(1)


def events_input(events: Any) -> Tuple[Union[str, bytes], Rows]:
    """Events as the extension module takes them: a path it streams, or
    JSON-lines bytes, with the map from lines back to rows."""
    if isinstance(events, (str, os.PathLike)):
        return os.fspath(events), FILE
    if isinstance(events, (bytes, bytearray, memoryview)):
        return bytes(events), FILE
    if is_dataframe(events):
        return events_from_frame(events)
    if isinstance(events, Mapping):
        raise ArgumentError("events: one dict given; pass a list of event dicts")
    if isinstance(events, Iterable):
        return events_from_records(events)
    raise ArgumentError(
        "events must be a pandas DataFrame, an iterable of dicts, a path to a "
        f"JSON-lines file or JSON-lines bytes, not {type(events).__name__}"
    )


def _churned_text(value: Any) -> str:
    if _missing(value):
        return ""
    if type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value in (0.0, 1.0):
        # pandas turns a 0/1 column with a gap into floats.
        return str(int(value))
    return str(value)


def _id_text(value: Any) -> str:
    return "" if _missing(value) else str(value)


def labels_input(labels: Any) -> Tuple[Union[str, bytes], Rows]:
    """Labels as the extension module takes them: a path to the CSV, or CSV
    bytes with a header, so that row ``r`` is line ``r + 2``."""
    if isinstance(labels, (str, os.PathLike)):
        return os.fspath(labels), FILE
    if isinstance(labels, (bytes, bytearray, memoryview)):
        return bytes(labels), FILE
    index: Optional[List[Any]] = None
    if is_dataframe(labels):
        missing = [c for c in ("customer_id", "churned") if c not in labels.columns]
        if missing:
            raise ArgumentError(
                f"labels DataFrame has no column {', '.join(map(repr, missing))} "
                f"(columns: {', '.join(map(str, labels.columns))}); expected customer_id, churned"
            )
        pairs: Iterable[Tuple[Any, Any]] = zip(
            labels["customer_id"].tolist(), labels["churned"].tolist()
        )
        index = labels.index.tolist()
    elif is_series(labels):
        pairs = zip(labels.index.tolist(), labels.tolist())
    elif isinstance(labels, Mapping):
        pairs = labels.items()
    elif isinstance(labels, Iterable):
        pairs = labels
    else:
        raise ArgumentError(
            "labels must be a DataFrame (customer_id, churned), a Series or dict "
            "of id -> churned, (id, churned) pairs, or a path to a CSV file, "
            f"not {type(labels).__name__}"
        )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["customer_id", "churned"])
    for position, pair in enumerate(pairs):
        try:
            customer_id, churned = pair
        except (TypeError, ValueError):
            raise ArgumentError(
                f"labels: row {position} is not a (customer_id, churned) pair: {pair!r}"
            ) from None
        writer.writerow([_id_text(customer_id), _churned_text(churned)])
    return out.getvalue().encode("utf-8"), Rows(2, index)


def date_text(value: Any, name: str) -> str:
    """A date argument as the CLI reads it: text as given, a date as
    midnight UTC, a date-time in RFC 3339 (naive: UTC)."""
    if isinstance(value, str):
        return value
    if isinstance(value, _dt.datetime):
        return _timestamp_text(value)
    if isinstance(value, _dt.date):
        return value.isoformat()
    raise ArgumentError(
        f"{name} must be a date, a datetime or text such as 2025-06-01, not {type(value).__name__}"
    )

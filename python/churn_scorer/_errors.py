"""The exceptions of churn_scorer, and the warning for rows that were skipped.

The extension module raises these classes (it imports this module), so they
carry the same fields whether an error comes from Rust or from converting a
DataFrame in Python.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "ChurnScorerError",
    "EventError",
    "ModelError",
    "ArgumentError",
    "NoEventsError",
    "FitError",
    "SkippedRowsWarning",
]


class ChurnScorerError(Exception):
    """Base class of every error churn_scorer raises on purpose."""


class EventError(ChurnScorerError, ValueError):
    """An event the engine rejects (with ``strict=True``), or one that cannot
    be written as JSON at all.

    ``line`` is the 1-based line of the JSON-lines input the engine read
    (for a file: its line; for a DataFrame or an iterable: ``row + 1``).
    ``row`` is the 0-based position in a DataFrame or iterable (``None`` for
    a file), ``index`` the DataFrame index label of that row (``None`` for
    other inputs). ``reason`` is the engine's stable label, as in the
    worker's metrics and the ``score`` command's report (``missing_field``,
    ``bad_timestamp``, ...; ``unsupported_value`` for a value Python cannot
    write as JSON).
    """

    def __init__(
        self,
        line: int,
        reason: str,
        message: str,
        row: Optional[int] = None,
        index: Any = None,
    ) -> None:
        self.line = line
        self.reason = reason
        self.message = message
        self.row = row
        self.index = index
        super().__init__(line, reason, message, row, index)

    def __str__(self) -> str:
        if self.row is None:
            where = f"line {self.line}"
        elif self.index is None or self.index == self.row:
            where = f"row {self.row}"
        else:
            where = f"row {self.row} (index {self.index!r})"
        return f"{where}: {self.reason}: {self.message}"


class ModelError(ChurnScorerError, ValueError):
    """A model file that does not parse or validate. ``key`` is the dotted
    path of the offending key (empty when the TOML itself is malformed)."""

    def __init__(self, message: str, key: str = "") -> None:
        self.message = message
        self.key = key
        super().__init__(message, key)

    def __str__(self) -> str:
        return self.message


class ArgumentError(ChurnScorerError, ValueError):
    """An argument out of range or unreadable (a date, a share, a fold count),
    or labels too few to fit on."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NoEventsError(ChurnScorerError, ValueError):
    """``strict=True`` and not one event could be scored."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FitError(ChurnScorerError):
    """The fit failed (the regression, or building the fitted model)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SkippedRowsWarning(UserWarning):
    """Some event rows or label rows were rejected and skipped (without
    ``strict``), as the CLI reports them on standard error. The result's
    ``skipped_events`` / ``skipped_labels`` list every one."""

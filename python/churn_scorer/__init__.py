"""churn_scorer: score, backtest and fit churn-scorer models from Python.

The numbers are the ``churn-scorer`` command line's, to the digit: events
given as a DataFrame or dicts are written as the JSON lines the CLI reads,
and the extension module runs the CLI's own Rust code on them (the offline
replay of churn-core, the backtest and fit of churn-analysis). Nothing is
scored in Python.

>>> import churn_scorer
>>> churn_scorer.Model.default().version
'default-2026.12'
"""

from __future__ import annotations

import json
import os
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from . import _native
from ._convert import (
    FILE,
    Rows,
    SkippedRow,
    date_text,
    events_input,
    labels_input,
    require_pandas,
)
from ._errors import (
    ArgumentError,
    ChurnScorerError,
    EventError,
    FitError,
    ModelError,
    NoEventsError,
    SkippedRowsWarning,
)
from ._native import DEFAULT_TARGET_PRECISION, DEFAULT_TARGET_RATE, Model

if TYPE_CHECKING:
    import pandas

__version__: str = _native.__version__

__all__ = [
    "Model",
    "score",
    "score_records",
    "score_jsonl",
    "backtest",
    "fit",
    "Backtest",
    "FitResult",
    "SkippedRow",
    "ChurnScorerError",
    "EventError",
    "ModelError",
    "ArgumentError",
    "NoEventsError",
    "FitError",
    "SkippedRowsWarning",
    "DEFAULT_TARGET_PRECISION",
    "DEFAULT_TARGET_RATE",
]

#: Columns of ``score``'s DataFrame: the fields of the CLI's JSON lines
#: (``segment`` only when the model has segments).
SCORE_COLUMNS = (
    "customer_id",
    "risk_score",
    "band",
    "points",
    "summary",
    "reasons",
    "last_event_at",
    "events",
)

ModelLike = Union[Model, str, "os.PathLike[str]", None]
DateLike = Any  # str, datetime.date, datetime.datetime or pandas.Timestamp


def _model(model: ModelLike) -> Model:
    if model is None:
        return Model.default()
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        return Model.load(os.fspath(model))
    raise ArgumentError(
        f"model must be a churn_scorer.Model, a path to a model file or None, not {type(model).__name__}"
    )


def _warn_skipped(what: str, skipped: List[SkippedRow]) -> None:
    if not skipped:
        return
    shown = "; ".join(
        (f"row {s.row}" if s.row is not None else f"line {s.line}")
        + (f": {s.reason}" if s.reason else "")
        + f": {s.message}"
        for s in skipped[:3]
    )
    more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
    warning = SkippedRowsWarning(f"{len(skipped)} {what} skipped: {shown}{more}")
    warning.skipped = skipped  # type: ignore[attr-defined]
    warnings.warn(warning, stacklevel=3)


def _call(rows: Rows, run: Any, *args: Any, **kwargs: Any) -> Any:
    """Calls the extension module, naming the caller's row in an EventError."""
    try:
        return run(*args, **kwargs)
    except EventError as e:
        if rows is FILE:
            raise
        raise rows.event_error(e) from None


def score_jsonl(
    events: Any,
    model: ModelLike = None,
    as_of: Optional[DateLike] = None,
    *,
    strict: bool = False,
) -> str:
    """``churn-scorer score``'s standard output, byte for byte: one JSON line
    per customer, sorted by id. See :func:`score` for the arguments."""
    text, _skipped_rows, _stats = _score(events, model, as_of, strict)
    return text


def _score(events: Any, model: ModelLike, as_of: Optional[DateLike], strict: bool) -> tuple:
    payload, rows = events_input(events)
    as_of_text = None if as_of is None else date_text(as_of, "as_of")
    out, bad_lines, no_events, stats = _call(
        rows, _native.score, _model(model), payload, as_of_text, strict
    )
    skipped = [rows.skipped(line, reason, message) for line, reason, message in bad_lines]
    _warn_skipped("event rows", skipped)
    if no_events is not None:
        warnings.warn(f"no events scored: {no_events}", SkippedRowsWarning, stacklevel=3)
    return out, skipped, json.loads(stats)


def score_records(
    events: Any,
    model: ModelLike = None,
    as_of: Optional[DateLike] = None,
    *,
    strict: bool = False,
) -> List[Dict[str, Any]]:
    """:func:`score` without pandas: one dict per customer, sorted by id,
    the CLI's JSON lines parsed."""
    text, _skipped_rows, _stats = _score(events, model, as_of, strict)
    return [json.loads(line) for line in text.splitlines()]


def score(
    events: Any,
    model: ModelLike = None,
    as_of: Optional[DateLike] = None,
    *,
    strict: bool = False,
) -> pandas.DataFrame:
    """Scores every customer, as ``churn-scorer score`` does.

    ``events``: a pandas DataFrame with columns customer_id, event_type,
    timestamp (RFC 3339 text, or pandas date-times: naive ones are UTC) and
    optionally amount and properties (dicts); an iterable of such dicts; a
    path to a JSON-lines file; or JSON-lines bytes.
    ``model``: a :class:`Model`, a path to a model file, or None for the
    built-in default. ``as_of``: score at this time (events after it are
    ignored); default, the latest event time.

    Returns a DataFrame with one row per customer, sorted by id: customer_id,
    risk_score, band, points, summary (at most three sentences naming what
    raised the risk, with their numbers), reasons (a list of dicts: factor,
    label, points; largest points first), last_event_at (RFC 3339 text), events, and segment when
    the model has segments. ``frame.attrs["replay"]`` holds the counts the
    CLI prints as its summary.

    A row the engine rejects is skipped with a :class:`SkippedRowsWarning`
    (its ``skipped`` attribute lists every row); with ``strict=True`` the
    first one raises :class:`EventError` instead, naming the row and reason.
    """
    pd = require_pandas("score")
    text, skipped, stats = _score(events, model, as_of, strict)
    records = [json.loads(line) for line in text.splitlines()]
    columns = list(SCORE_COLUMNS)
    if any("segment" in r for r in records):
        columns.append("segment")
    frame = pd.DataFrame.from_records(records, columns=columns)
    stats["skipped_rows"] = len(skipped)
    frame.attrs["replay"] = stats
    return frame


class Backtest:
    """The figures of ``churn-scorer backtest`` and the customers behind them.

    ``summary`` is the CLI's ``--json`` object, parsed; ``to_json()`` is the
    line itself and ``text()`` the tables it prints without ``--json``.
    """

    def __init__(self, run: Any, events_rows: Rows, labels_rows: Rows) -> None:
        self._run = run
        self._events_rows = events_rows
        self._labels_rows = labels_rows
        self.summary: Dict[str, Any] = json.loads(run.summary_json())
        self.skipped_events: List[SkippedRow] = [
            events_rows.skipped(line, reason, message) for line, reason, message in run.bad_lines
        ]
        self.skipped_labels: List[SkippedRow] = [
            labels_rows.skipped(line, None, message) for line, message in run.bad_labels
        ]

    @property
    def roc_auc(self) -> Optional[float]:
        return self.summary["roc_auc"]

    @property
    def pr_auc(self) -> Optional[float]:
        return self.summary["pr_auc"]

    @property
    def brier(self) -> Optional[float]:
        return self.summary["brier"]

    @property
    def base_rate(self) -> Optional[float]:
        return self.summary["base_rate"]

    def to_json(self) -> str:
        """``backtest --json``'s output: one JSON object and a newline."""
        return str(self._run.summary_json())

    def text(self) -> str:
        """``backtest``'s tables, as printed without ``--json``."""
        return str(self._run.text())

    def html(self, title: Optional[str] = None) -> str:
        """``backtest --report``'s self-contained HTML page."""
        return str(self._run.html(title))

    def save_report(self, path: Union[str, "os.PathLike[str]"], title: Optional[str] = None) -> None:
        """Writes :meth:`html` to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.html(title))

    @property
    def thresholds(self) -> pandas.DataFrame:
        """Alert volume and precision per at-risk threshold over the month
        before the cutoff (DataFrame: threshold, customers, rate, precision,
        recall), as in the ``--json`` output's ``thresholds.table``."""
        pd = require_pandas("Backtest.thresholds")
        return pd.DataFrame.from_records(
            self.summary["thresholds"]["table"],
            columns=["threshold", "customers", "rate", "precision", "recall"],
        )

    @property
    def customers(self) -> pandas.DataFrame:
        """Every labelled customer, sorted by id (DataFrame: customer_id,
        risk_score at the cutoff or NaN without events, churned, segment)."""
        pd = require_pandas("Backtest.customers")
        return pd.DataFrame.from_records(
            self._run.customers(), columns=["customer_id", "risk_score", "churned", "segment"]
        )

    def with_targets(
        self,
        precision: float = DEFAULT_TARGET_PRECISION,
        rate: float = DEFAULT_TARGET_RATE,
    ) -> "Backtest":
        """The same backtest with its thresholds chosen for other targets
        (``--alert-precision``, ``--alert-rate``)."""
        return Backtest(self._run.with_targets(precision, rate), self._events_rows, self._labels_rows)

    def choose_threshold(
        self, *, precision: Optional[float] = None, rate: Optional[float] = None
    ) -> Optional[Dict[str, Any]]:
        """The lowest at-risk threshold whose alerts over the month before
        the cutoff reach ``precision``, or that alert at most ``rate`` of the
        customers per 30 days (give one). Returns its row of
        :attr:`thresholds` as a dict, or None when no threshold qualifies."""
        if (precision is None) == (rate is None):
            raise ArgumentError("choose_threshold: give precision or rate (one of them)")
        t = self.summary["thresholds"]
        chosen = self.with_targets(
            precision if precision is not None else t["target_precision"],
            rate if rate is not None else t["target_rate"],
        ).summary["thresholds"]
        return chosen["for_precision"] if precision is not None else chosen["for_rate"]

    def __repr__(self) -> str:
        return (
            f"<Backtest of {self.summary['model_version']} at {self.summary['cutoff']}: "
            f"ROC AUC {self.roc_auc}, {self.summary['counts']['labelled']} labelled>"
        )


def backtest(
    events: Any,
    labels: Any,
    cutoff: DateLike,
    model: ModelLike = None,
    *,
    alert_precision: float = DEFAULT_TARGET_PRECISION,
    alert_rate: float = DEFAULT_TARGET_RATE,
    strict: bool = False,
) -> Backtest:
    """Runs ``churn-scorer backtest``: replays the events strictly before
    ``cutoff`` and measures how the model ranks the labelled customers.

    ``events`` as for :func:`score`. ``labels``: a DataFrame with columns
    customer_id and churned (1/0 or True/False), a Series or dict of
    id -> churned, (id, churned) pairs, or a path to a ``customer_id,churned``
    CSV. ``cutoff``: ``"2025-06-01"`` (midnight UTC), RFC 3339 text, a date
    or a datetime. ``alert_precision`` / ``alert_rate`` pick the thresholds
    reported in ``summary["thresholds"]``. Rejected rows are skipped with a
    :class:`SkippedRowsWarning` (``strict=True``: the first event row raises
    :class:`EventError`).
    """
    events_payload, events_rows = events_input(events)
    labels_payload, labels_rows = labels_input(labels)
    run = _call(
        events_rows,
        _native.backtest,
        _model(model),
        events_payload,
        labels_payload,
        date_text(cutoff, "cutoff"),
        alert_precision,
        alert_rate,
        strict,
    )
    result = Backtest(run, events_rows, labels_rows)
    _warn_skipped("event rows", result.skipped_events)
    _warn_skipped("label rows", result.skipped_labels)
    return result


class FitResult:
    """What ``churn-scorer fit`` wrote and printed.

    ``model`` is the fitted :class:`Model`; ``model.to_toml()`` (also
    :meth:`to_toml`) is the file ``--out`` receives, header included;
    ``description`` the lines printed; ``summary`` the fit's figures.
    """

    def __init__(self, run: Any, events_rows: Rows, labels_rows: Rows) -> None:
        self._run = run
        self.model: Model = run.model
        self.description: List[str] = list(run.description)
        self.summary: Dict[str, Any] = json.loads(run.summary_json())
        self.skipped_events: List[SkippedRow] = [
            events_rows.skipped(line, reason, message) for line, reason, message in run.bad_lines
        ]
        self.skipped_labels: List[SkippedRow] = [
            labels_rows.skipped(line, None, message) for line, message in run.bad_labels
        ]

    def to_toml(self) -> str:
        """The model file, as ``fit --out`` writes it."""
        return self.model.to_toml()

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the model file to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_toml())

    def html(self) -> str:
        """``fit --report``'s in-sample HTML report."""
        return str(self._run.html())

    def __repr__(self) -> str:
        return (
            f"<FitResult {self.summary['model_version']}: cross-validated AUC "
            f"{self.summary['cv_auc']:.4f} on {self.summary['customers']} customers>"
        )


def fit(
    events: Any,
    labels: Any,
    cutoff: DateLike,
    base: ModelLike = None,
    *,
    folds: int = 5,
    seed: int = 42,
    min_support: int = 20,
    half_life_days: float = 30.0,
    model_version: Optional[str] = None,
    lambdas: Optional[Sequence[float]] = None,
    half_life_grid: Optional[Sequence[float]] = None,
    keep_half_lives: bool = False,
    one_standard_error: bool = False,
    alert_precision: Optional[float] = None,
    alert_rate: Optional[float] = None,
    strict: bool = False,
    generated_on: Optional[str] = None,
) -> FitResult:
    """Runs ``churn-scorer fit``: fits the model's points to the labels on
    the state at ``cutoff`` (L2 logistic regression, penalty chosen by
    cross-validation) and returns the model file it would write.

    Arguments as the CLI's options of the same names (``base``: a Model, a
    path, or None for the built-in default). ``generated_on`` is the date in
    the file's header (default: today, UTC, as the CLI).
    """
    events_payload, events_rows = events_input(events)
    labels_payload, labels_rows = labels_input(labels)
    base_model = _model(base)
    run = _call(
        events_rows,
        _native.fit,
        base_model,
        events_payload,
        labels_payload,
        date_text(cutoff, "cutoff"),
        folds=folds,
        seed=seed,
        min_support=min_support,
        half_life_days=half_life_days,
        model_version=model_version,
        lambdas=None if lambdas is None else [float(x) for x in lambdas],
        half_life_grid=None if half_life_grid is None else [float(x) for x in half_life_grid],
        keep_half_lives=keep_half_lives,
        one_standard_error=one_standard_error,
        alert_precision=alert_precision,
        alert_rate=alert_rate,
        strict=strict,
        generated_on=generated_on,
    )
    result = FitResult(run, events_rows, labels_rows)
    _warn_skipped("event rows", result.skipped_events)
    _warn_skipped("label rows", result.skipped_labels)
    return result

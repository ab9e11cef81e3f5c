# Type stubs of the extension module (python/src/lib.rs). The public API
# is churn_scorer/__init__.py; tests/test_stubs.py checks these against the
# built module.
import os
from typing import List, Optional, Tuple, Union

__version__: str
DEFAULT_TARGET_PRECISION: float
DEFAULT_TARGET_RATE: float

_Input = Union[str, bytes, "os.PathLike[str]"]
_BadLine = Tuple[int, str, str]
_BadLabel = Tuple[int, str]

class Model:
    """A validated churn-scorer model and the text it came from."""

    @staticmethod
    def load(path: Union[str, "os.PathLike[str]"]) -> Model:
        """Reads and validates a model file (TOML), as ``--model`` does."""
    @staticmethod
    def default() -> Model:
        """The built-in default model, used when ``--model`` is omitted."""
    @staticmethod
    def from_toml(text: str, source: str = "model text") -> Model:
        """Parses and validates a model from TOML text."""
    @property
    def version(self) -> str:
        """``model_version``."""
    @property
    def source(self) -> str:
        """A path, ``built-in default``, ``model text`` or ``fit of …``."""
    def to_toml(self) -> str:
        """The model file's text (as read, or as ``fit`` writes it)."""
    def to_json(self) -> str:
        """The parsed model as JSON text (comments dropped)."""

class BacktestRun:
    bad_lines: List[_BadLine]
    bad_labels: List[_BadLabel]
    def summary_json(self) -> str: ...
    def text(self) -> str: ...
    def html(self, title: Optional[str] = None) -> str: ...
    def customers(self) -> List[Tuple[str, Optional[float], bool, Optional[str]]]: ...
    def with_targets(self, precision: float, rate: float) -> BacktestRun: ...

class FitRun:
    model: Model
    description: List[str]
    bad_lines: List[_BadLine]
    bad_labels: List[_BadLabel]
    def summary_json(self) -> str: ...
    def html(self) -> str: ...

def score(
    model: Model, events: _Input, as_of: Optional[str] = None, strict: bool = False
) -> Tuple[str, List[_BadLine], Optional[str], str]: ...
def backtest(
    model: Model,
    events: _Input,
    labels: _Input,
    cutoff: str,
    alert_precision: float = ...,
    alert_rate: float = ...,
    strict: bool = False,
) -> BacktestRun: ...
def fit(
    base: Model,
    events: _Input,
    labels: _Input,
    cutoff: str,
    *,
    folds: int = 5,
    seed: int = 42,
    min_support: int = 20,
    half_life_days: float = 30.0,
    model_version: Optional[str] = None,
    lambdas: Optional[List[float]] = None,
    half_life_grid: Optional[List[float]] = None,
    keep_half_lives: bool = False,
    one_standard_error: bool = False,
    alert_precision: Optional[float] = None,
    alert_rate: Optional[float] = None,
    strict: bool = False,
    generated_on: Optional[str] = None,
) -> FitRun: ...

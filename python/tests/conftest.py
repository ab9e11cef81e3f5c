"""Shared fixtures: the churn-scorer CLI and the data generated with it.

The parity tests compare the package with the CLI on the same files, so
they need the binary: $CHURN_SCORER_BIN, else target/release/churn-scorer,
else target/debug/churn-scorer (`cargo build -p churn-scorer` or `cargo
test` builds it). Without it they are skipped, unless
CHURN_SCORER_REQUIRE_CLI=1 (set by .ci/run), which makes that a failure.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
CUTOFF = "2025-05-31T00:00:00Z"  # the generator's default: 150 days after 2025-01-01


def _find_cli() -> Path | None:
    env = os.environ.get("CHURN_SCORER_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("release", "debug"):
        candidate = target / profile / "churn-scorer"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class Cli:
    path: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(self.path), *args], capture_output=True, text=True, timeout=600
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"churn-scorer {' '.join(args)} failed:\n{proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def cli() -> Cli:
    path = _find_cli()
    if path is None:
        message = (
            "the churn-scorer binary was not found (set CHURN_SCORER_BIN or run "
            "`cargo build -p churn-scorer` at the repository root)"
        )
        if os.environ.get("CHURN_SCORER_REQUIRE_CLI") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Cli(path)


@dataclass
class Dataset:
    events: Path
    labels: Path
    cutoff: str


def _generate(cli: Cli, root: Path, name: str, *extra: str) -> Dataset:
    events = root / f"{name}.jsonl"
    labels = root / f"{name}-labels.csv"
    cli.run("generate", "--customers", "300", "--out", str(events), "--labels", str(labels), *extra)
    return Dataset(events, labels, CUTOFF)


@pytest.fixture(scope="session")
def journeys(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """300 customers' journeys with labels (the README's example data)."""
    return _generate(cli, tmp_path_factory.mktemp("journeys"), "journeys", "--seed", "7")


@pytest.fixture(scope="session")
def dirty(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The same shape with 3 % realistic bad lines."""
    return _generate(
        cli, tmp_path_factory.mktemp("dirty"), "dirty", "--seed", "11", "--invalid-rate", "0.03"
    )


def read_lines(path: Path) -> List[str]:
    return path.read_text(encoding="utf-8").splitlines()

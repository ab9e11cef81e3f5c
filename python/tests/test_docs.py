"""docs/python.md stays true: its shell and Python blocks run, in order, in a
fresh directory (the shell blocks with the churn-scorer binary)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import List, Tuple

import pytest

from conftest import REPO, Cli

PAGE = REPO / "docs" / "python.md"


def blocks() -> List[Tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.S | re.M)


def test_the_page_has_a_walk_through() -> None:
    kinds = [k for k, _ in blocks()]
    assert kinds.count("python") >= 8 and "sh" in kinds


def test_the_page_runs(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_python"}
    for n, (kind, code) in enumerate(blocks()):
        if kind == "sh":
            for line in code.strip().splitlines():
                args = shlex.split(line)
                assert args[0] == "churn-scorer", line
                cli.run(*args[1:])
        elif kind == "python":
            try:
                exec(compile(code, f"{PAGE.name} block {n}", "exec"), namespace)
            except Exception as e:  # pragma: no cover - the message is the point
                raise AssertionError(f"docs/python.md block {n} failed:\n{code}") from e
    assert (tmp_path / "fitted.toml").is_file()
    assert namespace["after"].roc_auc > 0.5

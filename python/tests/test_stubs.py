"""The type stubs describe the extension module as built: every name, and
every function's parameters (names, order, keyword-only, defaults given)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Dict, List, Tuple

import churn_scorer
from churn_scorer import _native

STUB = Path(churn_scorer.__file__).with_name("_native.pyi")

Params = List[Tuple[str, str, bool]]


def _stub_params(fn: ast.FunctionDef) -> Params:
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [False] * (len(positional) - len(a.defaults)) + [True] * len(a.defaults)
    out = [(p.arg, "positional", d) for p, d in zip(positional, defaults)]
    out += [(p.arg, "keyword", d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return [p for p in out if p[0] != "self"]


def _runtime_params(obj: object) -> Params:
    kinds = {
        inspect.Parameter.POSITIONAL_ONLY: "positional",
        inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
        inspect.Parameter.KEYWORD_ONLY: "keyword",
    }
    sig = inspect.signature(obj)  # type: ignore[arg-type]
    return [
        (p.name, kinds[p.kind], p.default is not inspect.Parameter.empty)
        for p in sig.parameters.values()
        if p.name not in ("self", "$self", "cls")
    ]


def _stub() -> Tuple[Dict[str, ast.FunctionDef], Dict[str, ast.ClassDef], List[str]]:
    tree = ast.parse(STUB.read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    values = [n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    return functions, classes, values


def test_stub_names_are_the_module_names() -> None:
    functions, classes, values = _stub()
    public = {n for n in dir(_native) if not n.startswith("_")} | {"__version__"}
    assert set(functions) | set(classes) | set(values) == public


def test_stub_signatures_match_the_functions() -> None:
    functions, _classes, _values = _stub()
    for name, fn in functions.items():
        assert _stub_params(fn) == _runtime_params(getattr(_native, name)), name


def test_stub_classes_match_methods_and_attributes() -> None:
    _functions, classes, _values = _stub()
    for cname, cls in classes.items():
        runtime = getattr(_native, cname)
        stub_members = set()
        for node in cls.body:
            if isinstance(node, ast.FunctionDef):
                stub_members.add(node.name)
                member = getattr(runtime, node.name)
                if not isinstance(member, property) and not inspect.isdatadescriptor(member):
                    assert _stub_params(node) == _runtime_params(member), f"{cname}.{node.name}"
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                stub_members.add(node.target.id)
        assert stub_members == {n for n in dir(runtime) if not n.startswith("_")}, cname


def test_the_package_is_marked_typed() -> None:
    assert STUB.with_name("py.typed").is_file()

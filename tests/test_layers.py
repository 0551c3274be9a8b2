"""The layering rules (pyproject.toml, [tool.importlinter]) hold, and they bite: a copy of the
code with one forbidden import fails them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

LINT = Path(sys.executable).parent / "lint-imports"
EDGES = {"indexer.cli"}


def lint(where: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(where / "pyproject.toml"), "--no-cache"], cwd=where,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(where)}, capture_output=True, text=True,
                          timeout=120)


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_layering_rules_hold():
    found = lint(ROOT)
    assert found.returncode == 0 and "4 kept, 0 broken" in found.stdout, found.stdout + found.stderr


def test_every_module_of_the_core_is_under_the_rules():
    """A new module or package at the top of indexer/ is either an edge (the command line) or in
    the core's list (a package there is checked with everything in it)."""
    modules = {f"indexer.{p.stem}" for p in (ROOT / "indexer").glob("*.py") if p.stem != "__init__"} | {
        f"indexer.{p.parent.name}" for p in (ROOT / "indexer").glob("*/__init__.py") if p.parent.name != "engines"}
    core = set(contracts()[0]["source_modules"])
    assert modules == core | EDGES, modules ^ (core | EDGES)


@pytest.mark.parametrize("module, line, broken", [
    ("indexer/search/searcher.py", "import service.routes", "The core imports neither the command line nor the service"),
    ("indexer/index/build.py", "from indexer.engines.faiss import store", "Engines are reached only through the seam"),
    ("indexer/engines/milvus/engine.py", "from indexer.engines.faiss import store", "Engines never import each other"),
    ("indexer/text/chunking.py", "from indexer.search.searcher import Query", "Layers: each package imports only those below it"),
])
def test_a_forbidden_import_breaks_its_rule(tmp_path, module, line, broken):
    for part in ("indexer", "service"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    found = lint(tmp_path)
    assert found.returncode == 1 and f"{broken} BROKEN" in found.stdout, found.stdout + found.stderr


def test_no_module_is_over_600_lines():
    """A module longer than that holds more than one thing (the Milvus engine was one 870-line module)."""
    long = {str(p.relative_to(ROOT)): n for p in [*(ROOT / "indexer").rglob("*.py"), *(ROOT / "service").rglob("*.py")]
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}
    assert long == {}


def test_faiss_and_sql_are_the_faiss_engines_own():
    """Search, build and the rest reach FAISS and the segments' SQL only through the seam (the
    embedding cache, cache.py, is the index folder's caller's own SQLite file, whatever the engine)."""
    import re

    outside = [p.name for p in [*(ROOT / "indexer").rglob("*.py"), *(ROOT / "service").glob("*.py")]
               if "engines" not in p.parts and p.name != "cache.py"
               and re.search(r"^\s*import faiss|json_extract\(|SELECT .* FROM", p.read_text(encoding="utf-8"), re.M)]
    assert outside == []


def test_engine_names_and_precisions_come_from_one_place_each():
    """The command line's choices and the service's settings follow the engine registry and the
    precision list: a name added there is accepted everywhere."""
    from indexer.cli import parser
    from indexer.engines import ENGINES
    from indexer.model.onnx_encoder import PRECISIONS
    from indexer.settings import Settings, described

    commands = next(a for a in parser()._actions if a.dest == "command").choices
    engine_options = [a for name, command in commands.items() for a in command._actions if a.dest in ("engine", "to")]
    assert engine_options and all(tuple(a.choices) == tuple(ENGINES) for a in engine_options)
    assert all(Settings(engine=name).engine == name for name in ENGINES)
    assert all(Settings(precision=name).precision == name for name in PRECISIONS)  # int8-7bit was refused
    assert all(name in described("precision") for name in PRECISIONS)  # the help names every one


def test_engine_neutral_tests_reach_the_engines_only_through_the_seam():
    """Only the modules named for an engine (test_faiss_*, test_milvus*) import its internals; the
    rest, the contract (test_engines.py) among them, go through indexer/index/engine.py, and
    conftest.py keeps the few helpers that damage a FAISS folder on purpose."""
    import re

    reaching = sorted(p.name for p in (ROOT / "tests").glob("test_*.py")
                      if not p.name.startswith(("test_faiss_", "test_milvus"))
                      and re.search(r"^\s*(from|import) indexer\.engines\.(faiss|milvus)", p.read_text(encoding="utf-8"),
                                    re.M))
    assert reaching == []


def test_no_test_module_imports_another():
    """Shared helpers live in tests/conftest.py (and the site stand-in in tests/sites.py)."""
    import re

    crossing = {p.name: found for p in (ROOT / "tests").glob("*.py")
                if (found := re.findall(r"^\s*from tests\.(test_\w+) import", p.read_text(encoding="utf-8"), re.M))}
    assert crossing == {}

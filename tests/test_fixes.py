"""Every fix the command line prints runs as printed: each case provokes an error, takes the line
after `fix:` and runs it in a shell exactly as a user would paste it (semsearch *not* on the PATH,
as after the README's set-up, which runs .venv/bin/semsearch; a note after '#' ignored by the
shell), then checks that what failed now works."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MILVUS_SLOW, SEED_FILE, STAND_IN, semsearch

BIN = Path(sys.executable).parent  # where `semsearch` is installed, as the README's set-up puts it
# The shell a user pastes into: the installation's bin folder not on its PATH.
SHELL_ENV = {**os.environ, **STAND_IN, "PATH": os.pathsep.join(
    p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != BIN.resolve())}


def fix_of(result: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("fix:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0].removeprefix("fix:").strip()


def run_fix(result: subprocess.CompletedProcess, cwd: Path) -> subprocess.CompletedProcess:
    """The printed fix, pasted into a shell."""
    fix = fix_of(result)
    assert shlex.split(fix)[0] == str(BIN / "semsearch"), fix  # the command as this shell can run it
    done = subprocess.run(fix, shell=True, cwd=cwd, env=SHELL_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{fix}\n{done.stdout}\n{done.stderr}"
    return done


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return semsearch(*args, cwd=cwd, env={**SHELL_ENV, **(env or {})})


@pytest.fixture()
def articles(tmp_path) -> Path:
    folder = tmp_path / "my articles"  # a space: the fix must quote it
    folder.mkdir()
    shutil.copy(SEED_FILE, folder / SEED_FILE.name)
    (folder / "harbour.txt").write_text("Harbour Reopens\nThe harbour reopened on Monday after repairs to the wall.\n")
    return folder


@MILVUS_SLOW
def test_a_garbled_engine_json_is_mended_by_the_printed_repair(articles, tmp_path, engine_kind):
    index = tmp_path / "news index"
    assert cli("index", str(articles), "--out", str(index), "--engine", engine_kind, cwd=tmp_path).returncode == 0
    (index / "engine.json").write_text("{not json")
    failed = cli("search", "harbour", "--index", str(index), cwd=tmp_path)
    assert "engine.json cannot be read" in failed.stderr
    mended = run_fix(failed, tmp_path)
    assert f"names the {engine_kind} engine again" in mended.stdout
    assert "Harbour" in cli("search", "harbour", "--index", str(index), cwd=tmp_path).stdout


def test_a_missing_index_names_the_build_that_makes_it(articles, tmp_path):
    (tmp_path / "seeds").mkdir()
    shutil.copy(SEED_FILE, tmp_path / "seeds" / SEED_FILE.name)
    failed = cli("search", "why won't Russia stop", "--index", "not built yet", cwd=tmp_path)
    run_fix(failed, tmp_path.parent)  # pasted anywhere: its paths are absolute
    assert "Russia" in cli("search", "why won't Russia stop", "--index", "not built yet", cwd=tmp_path).stdout


def test_a_stale_index_names_the_reindex_and_a_refused_repair_the_accept_loss(articles, tmp_path):
    index = tmp_path / "news index"
    cli("index", str(articles), "--out", str(index), cwd=tmp_path)
    (articles / "ferry.txt").write_text("Ferry Returns\nThe island ferry runs again from Monday.\n")
    stale = cli("index", "my articles", "--out", "news index", "--check", cwd=tmp_path)
    assert stale.returncode == 1
    run_fix(stale.__class__(stale.args, 2, stale.stdout, stale.stderr), tmp_path.parent)
    assert cli("index", str(articles), "--out", str(index), "--check", cwd=tmp_path).returncode == 0


def test_a_full_disk_says_what_to_free_and_the_same_command_runs_again(articles, tmp_path):
    for n in range(30):  # enough text that the build writes more than the limit allows
        (articles / f"long-{n}.txt").write_text(f"Report {n}\n" + "The tide rose over the harbour wall. " * 300)
    index = tmp_path / "index"
    limited = subprocess.run(["prlimit", "--fsize=150000", sys.executable, "-m", "indexer.cli", "index",
                              str(articles), "--out", str(index)], cwd=tmp_path, env=SHELL_ENV, capture_output=True,
                             text=True, timeout=300)
    assert "is full" in limited.stderr and "nothing was published" in limited.stderr, limited.stderr
    assert "MB are free now" in limited.stderr and "Traceback" not in limited.stderr
    run_fix(limited, tmp_path)
    assert cli("index", str(articles), "--out", str(index), "--check", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("setting", ["SEMSEARCH_PRECISION=int3", "SEMSEARCH_CPU_CLASS=pentium",
                                     "SEMSEARCH_MODEL_PATH=/nowhere/model"])
def test_a_bad_model_setting_names_the_line_that_undoes_it(articles, tmp_path, setting):
    command = f"{BIN / 'semsearch'} index {shlex.quote(str(articles))} --out {shlex.quote(str(tmp_path / 'index'))}"
    env = {**SHELL_ENV}
    env.pop("SEMSEARCH_MODEL_PATH")  # the packaged model: these settings are about it
    failed = subprocess.run(f"export {setting}\n{command}", shell=True, cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300, executable="/bin/bash")
    fix = fix_of(failed)
    done = subprocess.run(f"export {setting}\n{fix}\n{command}", shell=True, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, executable="/bin/bash")
    assert done.returncode == 0 and "indexed 2 documents" in done.stdout, f"{fix}\n{done.stderr}"


@pytest.mark.slow  # starts a Milvus Lite server
def test_a_milvus_that_does_not_answer_names_the_command_to_run_once_it_does(articles, tmp_path):
    from tests.conftest import free_port

    port = free_port()
    index = tmp_path / "index"
    failed = cli("index", str(articles), "--out", str(index), "--engine", "milvus", "--milvus-uri",
                 f"http://127.0.0.1:{port}", cwd=tmp_path)
    assert "cannot be reached" in failed.stderr and "once it answers: check that Milvus is running" in failed.stderr
    server = subprocess.Popen([str(BIN / "milvus-lite"), "server", "--data-dir", str(tmp_path / "milvus"), "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(60):  # until it listens
            if subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        run_fix(failed, tmp_path)
        assert "Harbour" in cli("search", "harbour", "--index", str(index), cwd=tmp_path).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_an_articles_folder_or_a_file_given_as_the_index_names_a_folder_of_its_own(articles, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    for given in (articles, tmp_path / "notes.txt"):
        wrong = cli("index", str(articles), "--out", str(given), cwd=tmp_path)
        assert "an index needs a folder of its own" in wrong.stderr or "is a file" in wrong.stderr, wrong.stderr
        run_fix(wrong, tmp_path)
    assert not (articles / "engine.json").exists() and not (articles / "CURRENT").exists()  # nothing written there
    served = cli("search", "harbour", "--index", str(articles), cwd=tmp_path)  # as `serve --index ~/news` did
    assert f"--out {shlex.quote(str(articles.with_name(articles.name + '-index')))}" in served.stderr
    assert "Harbour" in cli("search", "harbour", "--index", str(articles) + "-index", cwd=tmp_path).stdout


def test_a_folder_with_only_a_readme_is_a_place_for_an_index(articles, tmp_path):
    """As the project's own index/ ships: a README saying what the folder is for, and no index yet."""
    index = tmp_path / "index"
    index.mkdir()
    (index / "README.md").write_text("# index\nThe search index lives here once built.\n")
    built = cli("index", str(articles), "--out", str(index), cwd=tmp_path)
    assert built.returncode == 0 and "indexed 2 documents" in built.stdout, built.stderr


def test_a_corrupt_segment_file_names_the_repair_that_keeps_every_document(articles, tmp_path):
    from tests.conftest import segment_file
    from tests.conftest import flip

    index = tmp_path / "index"
    cli("index", str(articles), "--out", str(index), cwd=tmp_path)
    flip(segment_file(index, "vectors.npy"))
    failed = cli("search", "harbour", "--index", str(index), cwd=tmp_path)
    assert "missing or corrupt" in failed.stderr
    run_fix(failed, tmp_path.parent)
    assert "Harbour" in cli("search", "harbour", "--index", str(index), cwd=tmp_path).stdout

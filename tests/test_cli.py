"""The `semsearch` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from indexer.errors import program
from indexer.model.onnx_encoder import variant
from tests.conftest import ROOT, SEED_FILE, STAND_IN, semsearch

RUN = shlex.join(program())  # how fixes name the command: `semsearch` on PATH, else its path


def test_index_then_search_from_the_terminal(tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(SEED_FILE, seeds / SEED_FILE.name)
    (seeds / "notes.docx").write_bytes(b"PK\x03\x04")
    (seeds / "photo.txt").write_bytes(bytes(range(256)) * 40)  # an image saved under a text name
    built = semsearch("index", str(seeds), "--out", str(tmp_path / "index"))
    assert built.returncode == 0, built.stderr
    assert "indexed 1 document, 12 passages" in built.stdout
    assert "notes.docx" in built.stderr and "unsupported" in built.stderr
    assert "skipping" in built.stderr and "photo.txt: it holds binary data, not text" in built.stderr
    assert not (tmp_path / "index" / "embeddings.sqlite").exists()  # emptied once published: no file left

    printed = semsearch("search", "why won't Russia stop", "--index", str(tmp_path / "index"), "-k", "2")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("1. ") and "Why Russia Won’t Stop" in printed.stdout
    assert "»" in printed.stdout and "«" in printed.stdout  # the answering sentence is marked

    as_json = semsearch("search", "how many casualties", "--index", str(tmp_path / "index"), "--json")
    results = json.loads(as_json.stdout)["results"]
    assert any("over a million casualties" in r["highlight"] for r in results[:3])


def test_search_without_an_index_says_which_command_builds_it(tmp_path):
    result = semsearch("search", "war", "--index", str(tmp_path / "empty"))
    assert result.returncode == 2
    assert "no index found" in result.stderr and f"fix: {RUN} index" in result.stderr
    assert "Traceback" not in result.stderr
    elsewhere = semsearch("search", "war", "--index", "empty", cwd=tmp_path)  # no seeds/ folder here
    assert f"fix: {RUN} index FOLDER --out {tmp_path / 'empty'}  # FOLDER: the folder of your articles" \
        in elsewhere.stderr


def test_bad_arguments_are_clear_errors_not_tracebacks(tmp_path):
    empty = tmp_path / "seeds"
    empty.mkdir()
    for args, words in [(("index", str(empty), "--out", str(tmp_path / "i")), "no documents to index"),
                        (("index", str(tmp_path / "missing")), f"folder not found: {tmp_path / 'missing'}"),
                        (("index", str(SEED_FILE)), f"{SEED_FILE} is a file: give the folder that holds it"),
                        (("search", "war", "-k", "0"), "-k must be between 1 and 50")]:
        result = semsearch(*args)
        assert result.returncode == 2 and words in result.stderr
        assert "Traceback" not in result.stderr
    for variable, value, words in [("SEMSEARCH_ENGINE", "nosuch", "SEMSEARCH_ENGINE is 'nosuch': it should be 'faiss' or "
                                                                  "'milvus'"),
                                   ("SEMSEARCH_ANN_MIN_ROWS", "many", "SEMSEARCH_ANN_MIN_ROWS is 'many': it should be a "
                                                                      "whole number")]:
        result = semsearch("search", "war", "--index", str(tmp_path / "i"), env={variable: value})
        assert result.returncode == 2 and words in result.stderr
        assert "Traceback" not in result.stderr


def test_serve_on_a_port_in_use_says_so_before_loading_anything(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = semsearch("serve", "--index", str(tmp_path / "index"), "--port", port)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_search_ranks_with_the_services_fusion_variables(tmp_path, seed_copy):
    seed_index = seed_copy
    import os

    from fastapi.testclient import TestClient

    from service.app import create_app
    from indexer.settings import Settings

    env = {"SEMSEARCH_FUSION_METHOD": "rrf", "SEMSEARCH_RRF_K": "5", "SEMSEARCH_DENSE_WEIGHT": "1.0"}
    printed = subprocess.run([sys.executable, "-m", "indexer.cli", "search", "drone production", "--index",
                              str(seed_index), "-k", "5", "--json"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300, env=os.environ | env)
    assert printed.returncode == 0, printed.stderr
    cli = [(r["passage_id"], r["score"]) for r in json.loads(printed.stdout)["results"]]
    with TestClient(create_app(Settings(index_dir=seed_index, fusion_method="rrf", rrf_k=5, dense_weight=1.0))) as client:
        body = client.get("/search", params={"q": "drone production", "k": 5}).json()
    assert cli == [(r["passage_id"], r["score"]) for r in body["results"]]
    assert cli[0][1] <= 1.0 / 6 + 0.5 / 6 + 1e-6  # reciprocal-rank scores, not convex ones
    bad = subprocess.run([sys.executable, "-m", "indexer.cli", "search", "war", "--index", str(seed_index)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=os.environ | {"SEMSEARCH_FUSION_METHOD": "magic"})
    assert bad.returncode == 2 and "SEMSEARCH_FUSION_METHOD is 'magic': it should be 'relevance' or 'rrf' or 'convex'" in bad.stderr


def manifest_model(index) -> str:
    from indexer.index.engine import recorded_model

    return recorded_model(index)["name"]


def test_an_index_keeps_its_precision_and_never_mixes_vectors_of_two(tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(SEED_FILE, seeds / SEED_FILE.name)
    index = tmp_path / "index"
    # A new index on a VNNI machine: int8-static, named with the digest of its calibration text.
    assert semsearch("index", str(seeds), "--out", str(index), env={"SEMSEARCH_CPU_CLASS": "avx512-vnni"}).returncode == 0
    assert manifest_model(index) == f"sentence-transformers/all-MiniLM-L6-v2@{variant('int8-static')}"
    again = semsearch("index", str(seeds), "--out", str(index))  # no precision asked: the index's own
    assert again.returncode == 0 and "already up to date" in again.stdout
    assert semsearch("search", "casualties", "--index", str(index)).returncode == 0

    other = semsearch("search", "casualties", "--index", str(index), env={"SEMSEARCH_PRECISION": "fp32"})
    assert other.returncode == 2 and "built with model sentence-transformers/all-MiniLM-L6-v2@int8" in other.stderr
    assert "Traceback" not in other.stderr

    switched = semsearch("index", str(seeds), "--out", str(index), "--precision", "fp32")
    assert switched.returncode == 0, switched.stderr
    assert "embedded 12 of 12 passages" in switched.stdout  # nothing reused from the int8-static vectors
    assert manifest_model(index) == "sentence-transformers/all-MiniLM-L6-v2"
    printed = semsearch("search", "how many casualties", "--index", str(index), "--json")
    assert any("over a million casualties" in r["highlight"] for r in json.loads(printed.stdout)["results"][:3])

    wrong = semsearch("index", str(seeds), "--out", str(index), "--precision", "fp16")
    assert wrong.returncode == 2 and "unknown precision 'fp16'; use one of fp32, bf16, int8" in wrong.stderr


def test_search_through_a_running_server_prints_what_a_local_search_prints(folder_index):
    from tests.conftest import served

    _, index = folder_index
    local = semsearch("search", "harbour repairs", "--index", str(index), "-k", "2", env=STAND_IN)
    as_json = semsearch("search", "harbour repairs", "--index", str(index), "-k", "2", "--json", env=STAND_IN)
    with served(index, STAND_IN) as (_, url):
        remote = semsearch("search", "harbour repairs", "-k", "2", "--url", url)
        remote_json = semsearch("search", "harbour repairs", "-k", "2", "--json", env={"SEMSEARCH_URL": url})
        refused = semsearch("search", "harbour", "--after", "someday", "--url", url)
    assert local.returncode == remote.returncode == 0 and remote.stdout == local.stdout and "»" in remote.stdout
    here, there = json.loads(as_json.stdout), json.loads(remote_json.stdout)
    assert here.pop("index") == f"{index}/" and there.pop("index") == f"the index at {url}" and here == there
    assert refused.returncode == 2 and "--after must be an ISO 8601 date" in refused.stderr
    gone = semsearch("search", "harbour", "--url", url)  # the server has stopped
    assert gone.returncode == 2 and "no semsearch server answers" in gone.stderr and "Traceback" not in gone.stderr


def test_search_piped_into_a_reader_that_stops_early_is_not_an_error(seed_copy):
    seed_index = seed_copy
    piped = subprocess.run(f"{sys.executable} -m indexer.cli search war --index {seed_index} -k 20 --json | head -1",
                           shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert piped.stdout.strip() == "{" and "Broken pipe" not in piped.stderr and "error" not in piped.stderr


def test_a_build_that_is_not_on_a_terminal_logs_its_progress(tmp_path, monkeypatch, caplog):
    from indexer.index import progress
    from indexer.index.build import build_from_documents
    from indexer.text.documents import Document
    from indexer.model.embedding import light_model_for

    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line at every step instead of every 10 s
    documents = [Document(f"d{n}", f"Note {n}", f"notes/{n}.txt", f"Note {n}\n" + "The harbour crane moved. " * 300)
                 for n in range(30)]
    with caplog.at_level("INFO", logger="semsearch.build"):
        build_from_documents(documents, tmp_path / "index", light_model_for("hashing"))
    lines = [r.getMessage() for r in caplog.records if r.name == "semsearch.build"]
    assert lines and lines[-1].startswith("indexing: 30 of 30 documents")
    assert all(" passages embedded (" in line and ("left" in line or "not known" in line) for line in lines)
    assert not any(re.search(r"of [\d,]+ passages embedded", line) for line in lines)  # no total that grows


def test_the_final_count_says_how_many_vectors_were_reused(folder_index):
    seeds, index = folder_index
    (seeds / "ferry.txt").write_text("Ferry Returns\nThe ferry to the island runs again from Monday.\n")
    again = semsearch("index", str(seeds), "--out", str(index), env=STAND_IN)
    assert again.returncode == 0, again.stderr
    assert "added 1, changed 0, removed 0, unchanged 2; embedded 1 of 3 passages (2 reused) in" in again.stdout


def test_time_left_counts_passages_when_documents_finish_out_of_order():
    from indexer.index.progress import BuildProgress

    shown = BuildProgress(10, show=False)
    shown.expect(10, 100)
    assert shown.left(shown.started + 5) == "time left not known yet"
    shown.advance(0, 50)  # half the passages back (as from Ray, in any order), no document whole yet
    assert shown.left(shown.started + 20) == "about 20 s left"
    shown.advance(10, 50)
    assert shown.left(shown.started + 40) == "about 0 s left"


@pytest.mark.slow  # makes the ONNX export and both int8 models: 40 s
def test_the_first_index_on_a_clean_cache_prints_only_its_own_lines(tmp_path):
    """No exporter's or quantizer's advice to its own developers (tracer warnings, deprecated
    arguments, progress bars) while the model's ONNX export and int8 models are made."""
    result = semsearch("index", str(ROOT / "seeds"), "--out", str(tmp_path / "index"),
                       env={"SEMSEARCH_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert any("once" in line for line in result.stderr.splitlines())  # the cache was clean: models were made
    foreign = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("semsearch: ")]
    assert foreign == []
    assert [line.split(" ")[0] for line in result.stdout.splitlines()] == ["added", "indexed"]


def test_counts_read_as_words_and_an_interrupted_build_says_what_it_left(tmp_path):
    import signal

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(SEED_FILE, seeds / SEED_FILE.name)
    index = tmp_path / "index"
    built = semsearch("index", str(seeds), "--out", str(index))
    assert "indexed 1 document, 12 passages, 18 sentences" in built.stdout, built.stdout
    again = semsearch("index", str(seeds), "--out", str(index))
    assert f"the index in {index}/ is already up to date" in again.stdout and "index index" not in again.stdout
    before = (index / "CURRENT").read_text()
    for n in range(40):  # about 1,500 passages: tens of seconds of embedding with the packaged model
        (seeds / f"report-{n}.txt").write_text(f"Report {n}\n" + " ".join(
            f"On day {day} of report {n} the harbour board met about tide number {day * n}." for day in range(400)))
    running = subprocess.Popen([sys.executable, "-m", "indexer.cli", "index", str(seeds), "--out", str(index)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(5)  # loaded and embedding
    running.send_signal(signal.SIGINT)
    _, err = running.communicate(timeout=120)
    assert running.returncode == 130, err
    assert "the index in use is as it was" in err and "running the same command again" in err, err
    assert (index / "CURRENT").read_text() == before


def test_a_missing_folder_says_where_it_was_looked_for_only_when_the_path_is_relative(tmp_path):
    absolute = semsearch("index", str(tmp_path / "gone"), "--out", str(tmp_path / "index"))
    assert f"folder not found: {tmp_path / 'gone'};" in absolute.stderr and "looked for in" not in absolute.stderr
    relative = semsearch("index", "gone", "--out", str(tmp_path / "index"), cwd=tmp_path)
    assert f"folder not found: gone (looked for in {tmp_path})" in relative.stderr


def test_a_mistyped_option_or_command_says_what_was_meant_in_the_commands_own_terms():
    typo = semsearch("search", "flooding", "--outlt", "Coast Herald")
    assert typo.returncode == 2 and typo.stderr.startswith("usage: semsearch search")
    assert "unrecognized arguments: --outlt Coast Herald (did you mean --outlet?)" in typo.stderr
    command = semsearch("serch", "flooding")
    assert command.returncode == 2 and "unknown command 'serch' (did you mean search?)" in command.stderr
    date = semsearch("search", "flooding", "--after", "yesterday")
    assert date.returncode == 2 and "--after must be an ISO 8601 date" in date.stderr and "published_after" not in date.stderr


def test_a_search_without_index_names_the_index_it_searched():
    """The README's searches name no --index: the answer says which index it looked in."""
    printed = semsearch("search", "flibbertigibbet zorkmid quux")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("no good match: nothing in index/ (the default; --index names another)")


def test_a_build_that_must_wait_for_another_says_so_at_once_and_times_only_itself(tmp_path):
    import fcntl
    import time

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    shutil.copy(SEED_FILE, seeds / SEED_FILE.name)
    index = tmp_path / "index"
    index.mkdir()
    with open(index / ".build.lock", "w") as held:  # another writer holds the index
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = subprocess.Popen([sys.executable, "-m", "indexer.cli", "index", str(seeds), "--out", str(index)],
                                   cwd=ROOT, env={**os.environ, **STAND_IN}, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        said = waiting.stderr.readline()
        while said and "waiting" not in said:
            said = waiting.stderr.readline()
        assert f"another process is writing the index {index}" in said and "waiting for it to finish" in said
        time.sleep(3)
        fcntl.flock(held, fcntl.LOCK_UN)
    out, rest = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, rest
    assert re.search(r"the other write finished after [3-9] s", rest)
    seconds = float(re.search(r"passages in ([\d.]+)s", out).group(1))
    assert seconds < 3, out  # the build's own time, not the wait


def test_flags_stand_over_the_environment_without_being_written_into_it(faiss_folder_index, monkeypatch, capsys):
    """--engine and --milvus-uri are the command's own: a later command in the same process (or a
    process it starts) does not inherit them."""
    from indexer.cli import main

    monkeypatch.delenv("SEMSEARCH_ENGINE", raising=False)
    monkeypatch.delenv("SEMSEARCH_MILVUS_URI", raising=False)
    _, index = faiss_folder_index
    assert main(["show", "--index", str(index), "--engine", "faiss"]) == 0
    assert "harbour" in capsys.readouterr().out
    assert "SEMSEARCH_ENGINE" not in os.environ and "SEMSEARCH_MILVUS_URI" not in os.environ
    assert main(["show", "--index", str(index), "--engine", "milvus"]) == 2  # the index is FAISS's: refused
    assert "SEMSEARCH_ENGINE" not in os.environ

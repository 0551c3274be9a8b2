"""See what was kept: GET /documents/{doc_id}, GET /documents and `semsearch show` return a stored
document (from a folder or the API) with its text as kept and its passages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from indexer.settings import Settings
from service.app import create_app
from tests.conftest import ROOT, STAND_IN, semsearch
from bench.extraction import PAGES

KEY = {"Authorization": "Bearer k"}
PAGE = PAGES / "stadium-roof--with-comments.html"


@pytest.fixture()
def page_index(tmp_path, engine_kind):
    """A folder of one news page and one text article, indexed with the stand-in encoder, on each engine."""
    folder = tmp_path / "news"
    folder.mkdir()
    shutil.copy(PAGE, folder / PAGE.name)
    (folder / "dam.txt").write_text("Dam Opens\nThe new dam opened today and will power the valley for decades.\n")
    index = tmp_path / "index"
    assert semsearch("index", str(folder), "--out", str(index), env={**STAND_IN, "SEMSEARCH_ENGINE": engine_kind}
                     ).returncode == 0
    return index


def test_a_stored_page_shows_the_article_as_kept_with_its_passages(page_index):
    settings = Settings(index_dir=page_index, model_path="hashing", reload_interval=0, api_key="k")
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/documents/{PAGE.stem}").status_code == 401  # behind the key, like the writes
        body = client.get(f"/documents/{PAGE.stem}", headers=KEY).json()
        assert body["origin"] == "folder" and body["title"].startswith("Stadium roof repairs")
        assert body["source"].endswith(PAGE.name) and body["published_at"] == "2026-03-02T08:30:00Z"
        assert "corrosion in the steel beams" in body["text"] and "About time too" not in body["text"]
        assert body["passages"] and all(body["text"][p["start"]:p["end"]] == p["text"] for p in body["passages"])
        assert [p["start"] for p in body["passages"]] == sorted(p["start"] for p in body["passages"])

        missing = client.get("/documents/no-such-page", headers=KEY)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        listed = client.get("/documents", headers=KEY, params={"limit": 1}).json()
        assert listed["total"] == 2 and [d["doc_id"] for d in listed["documents"]] == ["dam"]
        rest = client.get("/documents", headers=KEY, params={"offset": 1}).json()["documents"]
        assert [d["doc_id"] for d in rest] == [PAGE.stem]


def test_an_api_document_shows_its_newest_version_and_is_gone_once_deleted(page_index):
    settings = Settings(index_dir=page_index, model_path="hashing", reload_interval=0, api_key="k")
    with TestClient(create_app(settings)) as client:
        for text in ("The ferry timetable changes on Monday.", "The ferry timetable changes on Tuesday instead."):
            added = client.post("/documents", headers=KEY, json={"documents": [{"id": "ferry", "title": "Ferry",
                                                                                 "text": text}]})
            assert added.status_code == 200, added.text
        shown = client.get("/documents/ferry", headers=KEY).json()
        assert shown["origin"] == "api" and shown["text"] == "The ferry timetable changes on Tuesday instead."
        assert [p["text"] for p in shown["passages"]] == [shown["text"]]  # the old version's passage is gone
        assert client.get("/documents", headers=KEY).json()["total"] == 3
        assert client.delete("/documents/ferry", headers=KEY).status_code == 200
        assert client.get("/documents/ferry", headers=KEY).status_code == 404


def test_show_on_the_command_line(page_index):
    printed = semsearch("show", PAGE.stem, "--index", str(page_index), env=STAND_IN)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("Stadium roof repairs") and "corrosion in the steel beams" in printed.stdout
    as_json = json.loads(semsearch("show", PAGE.stem, "--index", str(page_index), "--json", env=STAND_IN).stdout)
    assert as_json["doc_id"] == PAGE.stem and as_json["passages"]
    listing = semsearch("show", "--index", str(page_index), env=STAND_IN).stdout.splitlines()
    assert [line.split("\t")[0] for line in listing] == ["dam", PAGE.stem]
    unknown = semsearch("show", "nope", "--index", str(page_index), env=STAND_IN)
    assert unknown.returncode == 2 and "no document with id 'nope'" in unknown.stderr and "semsearch show" in unknown.stderr


def test_show_reads_what_the_index_records_without_loading_the_model(tmp_path):
    """`semsearch show` on the real model's index (index/, built by the test command) opens it by
    the model name and dimension its manifest records: no ONNX runtime, tokenizer or torch."""
    probe = ("import contextlib, io, json, sys; from indexer.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out: code = main(['show', '--index', 'index', '--json'])\n"
             "print(json.dumps([code, json.loads(out.getvalue())['total'], "
             "[m for m in ('openvino', 'onnxruntime', 'tokenizers', 'torch') if m in sys.modules]]))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code, total, loaded = json.loads(done.stdout.splitlines()[-1])
    assert code == 0 and total >= 1 and loaded == []

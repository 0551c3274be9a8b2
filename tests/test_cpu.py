"""Precision by CPU class: the decision table with every class forced, an index keeping its
precision on another class (native or emulated, said in /readyz and the log), and `doctor`."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer.model import cpu
from indexer.index.build import build_from_folder
from indexer.model.embedding import ModelError, choose_precision, default_precision, light_model_for
from indexer.settings import Settings
from service.app import create_app
from tests.conftest import SEED_FILE, SEEDS, semsearch

FLAGS = {  # what /proc/cpuinfo lists on each kind of machine (the part that decides)
    "zen4": ("x86_64", "sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16"),
    "sapphire-rapids": ("x86_64", "avx2 avx512f avx512bw amx_int8 amx_bf16 amx_tile"),
    "skylake-server": ("x86_64", "avx2 avx512f avx512bw avx512dq"),
    "zen3": ("x86_64", "sse4_2 avx avx2 fma"),
    "graviton3": ("aarch64", "fp asimd asimddp sve"),
    "cortex-a72": ("aarch64", "fp asimd crc32"),
    "old-x86": ("x86_64", "sse4_2 avx"),
}


@pytest.mark.parametrize("machine, expected", [
    ("zen4", cpu.VNNI), ("sapphire-rapids", cpu.VNNI), ("skylake-server", cpu.AVX512), ("zen3", cpu.AVX2),
    ("graviton3", cpu.ARM_DOT), ("cortex-a72", cpu.BASELINE), ("old-x86", cpu.BASELINE)])
def test_every_kind_of_cpu_gets_its_class(machine, expected, tmp_path):
    arch, flags = FLAGS[machine]
    assert cpu.classify(frozenset(flags.split()), arch) == expected
    if arch == "x86_64":  # read from a cpuinfo file as on the machine
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: Test {machine}\nflags\t\t: {flags}\n")
        found = cpu.read_cpu(tmp_path / "cpuinfo")
        assert found.cpu_class == expected and found.name == f"Test {machine}"


@pytest.mark.parametrize("cpu_class", cpu.CLASSES)
def test_a_new_index_takes_its_classes_precision_and_an_existing_one_keeps_its_own(cpu_class, monkeypatch):
    monkeypatch.setenv("SEMSEARCH_CPU_CLASS", cpu_class)
    assert default_precision() == cpu.TABLE[cpu_class].precision == choose_precision(None, None)
    assert choose_precision(None, "sentence-transformers/all-MiniLM-L6-v2@int8") == "int8"
    assert choose_precision(None, "sentence-transformers/all-MiniLM-L6-v2") == "fp32"
    assert choose_precision("bf16", None) == "bf16"  # SEMSEARCH_PRECISION / --precision still override
    forced = cpu.read_cpu()
    assert forced.forced and cpu.native("fp32", forced)
    assert cpu.native("int8-static", forced) == (cpu_class in (cpu.VNNI, cpu.ARM_DOT))
    assert cpu.native("int8-7bit", forced) == (cpu_class != cpu.BASELINE)
    assert cpu.TABLE[cpu_class].why


def test_an_unknown_forced_class_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SEMSEARCH_CPU_CLASS", "avx9000")
    with pytest.raises(ModelError, match="SEMSEARCH_CPU_CLASS must be one of"):
        default_precision()


@pytest.fixture(scope="module")
def int8_index(tmp_path_factory):
    """The seed article indexed at int8 (dynamic), whatever this CPU's own choice would be."""
    index = tmp_path_factory.mktemp("int8") / "index"
    build_from_folder(SEEDS, index, light_model_for(precision="int8"), progress=False)
    return index


@pytest.mark.parametrize("cpu_class, emulated", [(cpu.AVX2, True), (cpu.VNNI, False)])
def test_an_index_served_on_another_cpu_class_keeps_its_precision_and_says_if_emulated(
        int8_index, cpu_class, emulated, monkeypatch, caplog):
    monkeypatch.setenv("SEMSEARCH_CPU_CLASS", cpu_class)
    with caplog.at_level(logging.INFO, logger="semsearch.service"):
        with TestClient(create_app(Settings(index_dir=int8_index, reload_interval=0))) as client:
            ready = client.get("/readyz").json()
            hits = client.get("/search", params={"q": "how many casualties", "k": 3}).json()
    shown = ready["arithmetic"]
    assert ready["model"].endswith("@int8") and shown["precision"] == "int8" and shown["cpu_class"] == cpu_class
    assert shown["native"] is not emulated and shown["query_embedding_ms"] > 0
    assert ("emulated" in caplog.text) == emulated and "query embedding p50" in caplog.text
    # Queries at the index's precision still find what they should, emulated or not.
    assert any("over a million casualties" in hit["text"] for hit in hits["results"])


@pytest.mark.parametrize("precision, floor", [("int8-7bit", 0.995), ("int8", 0.995), ("int8-static", 0.99)])
def test_each_precision_stays_close_to_fp32_on_this_cpu(precision, floor):
    """Passages and queries of each precision against fp32, on whatever CPU runs the tests (the
    table's bar is a mean cosine of 0.995; int8-static's passages measured 0.994 on AVX2, which
    is why that class does not get it)."""
    from indexer.text.chunking import chunk_document
    from indexer.text.documents import parse_text

    seed_document = parse_text(SEED_FILE.read_text(encoding="utf-8"), "seed", str(SEED_FILE))
    fp32, other = light_model_for(precision="fp32"), light_model_for(precision=precision)
    texts = [p.text for p in chunk_document(seed_document, fp32.token_spans, fp32.max_tokens)]
    mine, theirs = fp32.embed_passages(texts, [[] for _ in texts], False)[0], \
        other.embed_passages(texts, [[] for _ in texts], False)[0]
    passages = (mine * theirs).sum(axis=1)
    queries = [float(np.dot(fp32.embed_query(q), other.embed_query(q))) for q in cpu.SAMPLE_QUERIES]
    assert passages.mean() >= floor and passages.min() > 0.98, passages
    assert np.mean(queries) >= 0.99 and min(queries) > 0.98, queries


def test_doctor_names_the_class_the_choice_and_how_the_index_runs(int8_index):
    found = semsearch("doctor", "--index", str(int8_index), env={"SEMSEARCH_CPU_CLASS": cpu.AVX2})
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert "class avx2" in lines[0] and "forced by SEMSEARCH_CPU_CLASS" in lines[0]
    assert f"precision {cpu.TABLE[cpu.AVX2].precision}" in lines[1] and cpu.TABLE[cpu.AVX2].why in lines[1]
    assert "its precision int8 is emulated here" in lines[2] and "ms" in lines[2]
    assert re.match(r"model cache .+: [\d,]+ MB in \d+ folders? \(", lines[-1]), lines[-1]


def test_fp32_runs_where_it_is_fastest_with_the_same_vectors(monkeypatch):
    from indexer.model.onnx_encoder import OpenVinoRunner, OrtRunner

    texts = ["The harbour reopened on Monday after a year of repairs.", "Why won't Russia stop?"]
    found = {}
    for cpu_class in (cpu.AVX2, cpu.VNNI):
        monkeypatch.setenv("SEMSEARCH_CPU_CLASS", cpu_class)
        model = light_model_for(precision="fp32")
        found[cpu_class] = (type(model.runner), model.embed_passages(texts, [[], []], False)[0])
    assert found[cpu.AVX2][0] is (OpenVinoRunner if cpu.FP32_RUNTIME.get(cpu.AVX2) == "openvino" else OrtRunner)
    assert found[cpu.VNNI][0] is OrtRunner
    assert (found[cpu.AVX2][1] * found[cpu.VNNI][1]).sum(axis=1).min() > 0.99999

"""`semsearch eval` on a tiny BEIR dataset whose metric values are computed by hand."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import CORPUS, semsearch

QUERIES = {"q1": "central bank interest rates", "q2": "malaria vaccine", "q3": "volcano eruption"}
# q1: the one relevant document shares every keyword.  q2: d3 shares its keywords, d4 none.
# q3: judged relevant only to d2, which shares no keyword with it.
QRELS = [("q1", "d2", 1), ("q2", "d3", 1), ("q2", "d4", 1), ("q3", "d2", 1)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-beir")
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in CORPUS) + "\n")
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": q, "text": t}) for q, t in QUERIES.items()) + "\n")
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in QRELS))
    return folder


def test_eval_prints_and_writes_every_mode_with_hand_computed_keyword_metrics(dataset, tmp_path):
    out = tmp_path / "report.json"
    result = semsearch("eval", str(dataset), "--split", "test", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["dataset"] == dataset.name and report["split"] == "test"
    assert set(report["results"]) == {"hybrid", "dense", "keyword"}
    for mode, values in report["results"].items():
        assert set(values) == {"ndcg@10", "recall@100", "mrr@10", "seconds"}
        assert f"| {mode} |" in result.stdout

    # Keyword search only returns documents sharing a term with the query:
    # q1 finds d2 first; q2 finds d3 first and never d4; q3 finds nothing relevant.
    ndcg_q2 = 1 / (1 + 1 / math.log2(3))  # one of two relevant documents, at rank 1
    keyword = report["results"]["keyword"]
    assert keyword["ndcg@10"] == pytest.approx((1 + ndcg_q2 + 0) / 3, abs=1e-4)
    assert keyword["recall@100"] == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-4)
    assert keyword["mrr@10"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-4)

    # Dense search ranks all four documents, so every relevant one is within 100.
    assert report["results"]["dense"]["recall@100"] == pytest.approx(1.0)


def test_eval_on_a_folder_that_is_not_a_dataset_is_a_clear_error(tmp_path):
    result = semsearch("eval", str(tmp_path))
    assert result.returncode == 2 and "not a BEIR dataset" in result.stderr
    assert "Traceback" not in result.stderr

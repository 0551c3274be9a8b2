"""Load and faults together: searches from 8 clients while documents are ingested and deleted and
a folder reindex publishes; then every acknowledged document must be searchable.

    .venv/bin/python bench/load_fault.py --seconds 30 --json bench-results/load_fault.json

Loopback only, bounded in time, stand-in encoder (SEMSEARCH_MODEL_PATH=hashing: the write and
serving machinery is under test, not the model). Figures: search requests, failed ones (any
status but 200; target 0), p50/p99, ingests and deletes acknowledged with 200, the reindexes
that published, and how many acknowledged documents are missing at the end (target 0) or
deleted ones still found (target 0).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from bench.serving import percentiles  # noqa: E402
from tests.conftest import STAND_IN, start_server, stop_server  # noqa: E402

KEY = "bench"
WORDS = ("harbour ferry dam bridge river valley port trade election budget school hospital drone "
         "factory strike talks ceasefire border energy grid storm flood harvest museum").split()


def article(rng: random.Random, n: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(8)) + f" Tag{n}."


def index_folder(folder: Path, index: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "indexer.cli", "index", str(folder), "--out", str(index)],
                          cwd=ROOT, env={**os.environ, **STAND_IN}, capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load runs")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rng = random.Random(0)
    work = Path(tempfile.mkdtemp(prefix="semsearch-load-fault-"))
    folder, index = work / "articles", work / "index"
    folder.mkdir()
    for n in range(200):
        (folder / f"a{n}.txt").write_text(f"Article {n}\n{article(rng, n)}\n")
    assert index_folder(folder, index).returncode == 0
    server, url = start_server(index, STAND_IN | {"SEMSEARCH_API_KEY": KEY})
    stop = threading.Event()
    searches: list[tuple[float, int]] = []
    acknowledged, deleted, reindexes, write_failures = set(), set(), [], []

    def search(seed: int) -> None:
        local = random.Random(seed)
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.get("/search", params={"q": " ".join(local.sample(WORDS, 3))}).status_code
                except httpx.HTTPError:
                    status = 0
                searches.append(((time.perf_counter() - started) * 1000, status))

    def write() -> None:
        n = 0
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as client:
            while not stop.is_set():
                doc = {"id": f"ingest-{n}", "text": f"Ingested {n}. " + article(rng, 10_000 + n)}
                answer = client.post("/documents", json={"documents": [doc]})
                if answer.status_code == 200:
                    acknowledged.add(doc["id"])
                else:
                    write_failures.append(answer.status_code)
                if n % 3 == 2:  # delete an earlier one
                    victim = f"ingest-{n - 2}"
                    if client.delete(f"/documents/{victim}").status_code == 200:
                        deleted.add(victim)
                n += 1

    def reindex() -> None:
        for round_ in range(2):
            if stop.wait(args.seconds / 3):
                return
            (folder / f"late-{round_}.txt").write_text(f"Late {round_}\n{article(rng, 20_000 + round_)}\n")
            (folder / f"a{round_}.txt").unlink()
            started = time.perf_counter()
            result = index_folder(folder, index)
            reindexes.append({"exit": result.returncode, "seconds": round(time.perf_counter() - started, 2)})

    threads = [threading.Thread(target=search, args=(i,)) for i in range(args.clients)]
    threads += [threading.Thread(target=write), threading.Thread(target=reindex)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join()
        time.sleep(1.5)  # the server follows the last reindex
        missing, resurrected = [], []
        with httpx.Client(base_url=url, timeout=30) as client:
            for doc_id in sorted(acknowledged):
                found = client.get("/search", params={"q": f"Ingested {doc_id.split('-')[1]}", "doc_id": doc_id,
                                                      "mode": "keyword"}).json()["results"]
                (resurrected if doc_id in deleted and found else missing if doc_id not in deleted and not found
                 else []).append(doc_id)
    finally:
        stop.set()
        stop_server(server)
    statuses = [status for _, status in searches]
    report = {"seconds": args.seconds, "clients": args.clients,
              "searches": {**percentiles([ms for ms, _ in searches]), "failed": sum(s != 200 for s in statuses),
                           "requests_per_s": round(len(searches) / args.seconds, 1)},
              "ingests_acknowledged": len(acknowledged), "deletes_acknowledged": len(deleted),
              "write_failures": write_failures, "reindexes": reindexes,
              "acknowledged_missing": len(missing), "deleted_still_found": len(resurrected)}
    emit(report, args.json)


if __name__ == "__main__":
    main()

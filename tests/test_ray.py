"""`semsearch index --ray`: the same index as a local build, on a real Ray cluster started here
(`ray start --head --num-cpus 2`, token authentication on, as Ray starts by default), with the
real model; faults are real process kills (an actor, the driver)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.index.build import build_from_documents, chunk
from indexer.text.documents import StoredDocument, content_hash, read_folder
from indexer.index.engine import open_engine
from indexer.search.searcher import Query, Searcher
from tests.conftest import CORPUS, ROOT, SEED_FILE, cached_rows, free_port, open_reader, semsearch

TOKEN = {"RAY_AUTH_MODE": "token"}  # a client of a cluster with token authentication says so (Ray's rule)
# Set before Ray is first imported here: it reads the mode once, and builds in this process connect too.
os.environ.update(TOKEN)
# The cluster's token: a machine that never ran `ray get-auth-token --generate` has none in ~/.ray,
# and `ray start` then refuses to start; the head and every client here read it from the environment.
if "RAY_AUTH_TOKEN" not in os.environ and not (Path.home() / ".ray" / "auth_token").exists():
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
# One worker runs them all: one cluster, not one per worker. A minute and a half: slow checks (CI runs them).
pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="session")
def cluster():
    """A Ray head node with 2 CPUs: its address. Killed at the end with all its processes (one process
    group: `ray start --block` and what it started, the actors included)."""
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 bytes
    port = str(free_port())
    process = subprocess.Popen([RAY, "start", "--head", "--block", "--num-cpus", "2", "--port", port,
                                "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    address, seen = None, []
    deadline = time.monotonic() + 120
    while address is None and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"ray start --address='([^']+)'", line)
        address = found and found.group(1)
    if address is None:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("ray start did not print its address:\n" + "".join(seen))
    yield address
    os.killpg(process.pid, signal.SIGKILL)  # a graceful stop takes 30 s, and there is nothing to keep
    process.wait()
    shutil.rmtree(temp, ignore_errors=True)


def actor_pids() -> set[int]:
    """The processes of this machine that are embedding actors (Ray names a process by its actor)."""
    listed = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split()[0]) for line in listed.splitlines() if "MapBatches(PassageActor)" in line}


def keys_and_vectors(index: Path, model) -> dict[str, tuple]:
    """Every live passage's (Passage, vector, sentence vectors, word piece codes) by its model input's key."""
    engine = open_engine(index, model.name, model.dimension)
    reader = engine.reader()
    total, _ = reader.document_ids(0, 0)
    found = {}
    for doc_id, *_ in reader.document_ids(0, total)[1]:
        kept = reader.document(doc_id)
        keys = chunk(StoredDocument(kept.document, kept.origin, content_hash(kept.document)), model)[4]
        vectors = engine.writer().embedded(keys)
        found.update((key, (passage, *map(np.array, vectors[key]))) for key, passage in zip(keys, kept.passages))
    engine.close()  # (the copies above outlive the engine's memory-mapped files)
    return found


def bulletins(folder: Path, count: int) -> Path:
    """count articles of a few paragraphs each, every paragraph different (about 3 passages an article)."""
    lines = ["The harbour authority opened the east quay to container ships after dredging finished.",
             "Fishermen said the new channel markers helped them leave before dawn in heavy fog.",
             "A council report put the cost of the repairs at twice the first estimate.",
             "Residents near the rail yard asked for a night curfew on freight trains.",
             "The ferry operator added a winter timetable with two crossings a day.",
             "Volunteers counted seabirds on the breakwater for the annual survey.",
             "The port's new crane can lift forty tonnes and runs on shore power.",
             "Storm damage closed the promenade for a week while engineers checked the sea wall."]
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        paragraphs = ["\n".join(f"{lines[(n + p + i) % len(lines)]} (bulletin {n}, item {p}.{i})" for i in range(6))
                      for p in range(4)]
        (folder / f"bulletin-{n:03d}.txt").write_text(f"Harbour bulletin {n}\n\n" + "\n\n".join(paragraphs) + "\n")
    return folder


def test_a_ray_build_is_the_local_build(cluster, tmp_path, engine_kind):
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / SEED_FILE.name).write_bytes(SEED_FILE.read_bytes())
    (folder / "corpus.jsonl").write_text("".join(f'{{"_id": "{d["_id"]}", "title": "{d["title"]}", '
                                                 f'"text": "{d["text"]}"}}\n' for d in CORPUS))  # a BEIR corpus
    env = {"SEMSEARCH_ENGINE": engine_kind, **TOKEN}
    local = semsearch("index", str(folder), "--out", str(tmp_path / "local"), env=env)
    assert local.returncode == 0, local.stderr
    on_ray = semsearch("index", str(folder), "--out", str(tmp_path / "ray"), "--ray", cluster, env=env)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "embedding on " + cluster in on_ray.stderr and "2 actors" in on_ray.stderr
    assert on_ray.stdout.splitlines()[-1].split(" -> ")[0] == local.stdout.splitlines()[-1].split(" -> ")[0]
    assert "warning" not in on_ray.stderr.lower() and " E " not in on_ray.stderr, on_ray.stderr  # no noise of Ray's

    from indexer.cli.commands import model_for_index

    model = model_for_index(None, None, tmp_path / "local")  # the default precision, as both builds used
    ours, theirs = keys_and_vectors(tmp_path / "local", model), keys_and_vectors(tmp_path / "ray", model)
    assert ours.keys() == theirs.keys() and len(ours) == 16
    for key, (passage, vector, sentences, codes) in ours.items():
        assert theirs[key][0] == passage
        assert float(vector @ theirs[key][1]) >= 0.9999
        assert theirs[key][2].shape == sentences.shape
        assert (sentences * theirs[key][2]).sum(axis=1).min() >= 0.999  # means of a few token vectors
        assert theirs[key][3].shape == codes.shape and len(codes)  # the same word pieces, in 8 bits
        assert np.abs(theirs[key][3].astype(int) - codes).max() <= 2

    def ranked(index: Path, text: str) -> list[tuple[str, int]]:
        engine = open_engine(index, model.name, model.dimension)
        hits = Searcher(engine.reader(), model).search(Query(text, k=5))
        engine.close()
        return [(h.passage.doc_id, h.passage.start) for h in hits]

    for text in ("why won't Russia stop the war", "central bank interest rates", "malaria vaccine for children"):
        assert ranked(tmp_path / "local", text) == ranked(tmp_path / "ray", text)


class KillingOneActor:
    """The Ray embedding, with one actor's process killed (SIGKILL) once the first batch is back;
    notes whether a new actor process took its place while the job went on."""

    def __init__(self, remote) -> None:
        self.remote, self.killed, self.replaced = remote, None, False

    def embed(self, keys, texts, spans):
        for part in self.remote.embed(keys, texts, spans):
            running = actor_pids()
            if self.killed is None and running:
                self.killed, self.before = min(running), running
                os.kill(self.killed, signal.SIGKILL)
            elif self.killed is not None:
                self.replaced = self.replaced or bool(running - self.before)
            yield part


def test_a_small_build_on_ray_says_nothing_of_rays_own(cluster, tmp_path):
    """One article is one block for the actors: Ray's warning that most of its pool would sit idle
    (with a site-packages path) is not the user's business; fewer actors start instead."""
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / SEED_FILE.name).write_bytes(SEED_FILE.read_bytes())
    built = semsearch("index", str(folder), "--out", str(tmp_path / "index"), "--ray", cluster, env=TOKEN)
    assert built.returncode == 0, built.stderr
    assert "Warning" not in built.stderr and "site-packages" not in built.stderr, built.stderr


def test_an_actor_that_dies_is_replaced_and_its_batch_retried(cluster, tmp_path, embedder):
    from indexer.model.ray_embed import RayEmbedding

    documents = list(read_folder(bulletins(tmp_path / "articles", 40)))
    remote = KillingOneActor(RayEmbedding(embedder, None, "fp32", cluster, rows_per_call=8))
    try:
        summary = build_from_documents(documents, tmp_path / "index", embedder, remote=remote)
    finally:
        remote.remote.close()
    assert remote.killed is not None and remote.replaced
    assert summary.passages_embedded == summary.passages >= 100
    stored = keys_and_vectors(tmp_path / "index", embedder)
    assert len(stored) == summary.passages
    inputs = [chunk(StoredDocument(d, "folder", content_hash(d)), embedder) for d in documents]
    by_key = {k: (text, spans) for job in inputs for k, text, spans in zip(job[4], job[2], job[3])}
    keys = sorted(stored)[::10]  # a sample, embedded here
    vectors, _ = embedder.embed_passages([by_key[k][0] for k in keys], [by_key[k][1] for k in keys], False)
    assert all(float(v @ stored[k][1]) >= 0.9999 for v, k in zip(vectors, keys))


def test_a_killed_driver_leaves_the_index_serving_and_the_next_run_reuses_its_vectors(cluster, tmp_path):
    folder = bulletins(tmp_path / "articles", 60)
    (folder / SEED_FILE.name).write_bytes(SEED_FILE.read_bytes())
    index = tmp_path / "index"
    seeds_only = tmp_path / "seeds"
    seeds_only.mkdir()
    (seeds_only / SEED_FILE.name).write_bytes(SEED_FILE.read_bytes())
    assert semsearch("index", str(seeds_only), "--out", str(index)).returncode == 0
    before = (index / "CURRENT").read_text()

    said = tmp_path / "driver.log"
    with open(said, "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "indexer.cli", "index", str(folder), "--out", str(index),
                                   "--ray", cluster], cwd=ROOT, env={**os.environ, **TOKEN},
                                  stdout=log, stderr=subprocess.STDOUT)
        cached = 0
        deadline = time.monotonic() + 240
        while cached == 0 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the vectors are in the cache only until the build publishes
            cached = cached_rows(index)
        driver.kill()
        driver.wait()
    assert cached > 0, f"the driver finished or stalled before any vector came back:\n{said.read_text()}"
    cached = cached_rows(index)

    assert (index / "CURRENT").read_text() == before  # nothing published: the seed index still serves
    from indexer.cli.commands import model_for_index

    model = model_for_index(None, None, index)
    hits = Searcher(open_reader(index, model), model).search(Query("why won't Russia stop"))
    assert hits and {h.passage.doc_id for h in hits} == {SEED_FILE.stem}

    again = semsearch("index", str(folder), "--out", str(index), "--ray", cluster, env=TOKEN)
    assert again.returncode == 0, again.stderr
    done = re.search(r"added (\d+), .*embedded (\d+) of (\d+) passages", again.stdout)
    assert done and int(done.group(1)) == 60, again.stdout
    new_passages = int(done.group(3)) - 12  # the seed article's 12 were in the index already
    assert int(done.group(2)) == new_passages - cached  # every vector the killed run made was reused


def test_without_ray_nothing_of_ray_is_imported(tmp_path):
    script = ("import sys; from indexer.cli import main; "
              f"code = main(['index', {str(ROOT / 'seeds')!r}, '--out', {str(tmp_path / 'index')!r}]); "
              "print(code, sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "SEMSEARCH_MODEL_PATH": "hashing"}, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stdout + result.stderr


def test_an_unreachable_cluster_is_a_clear_error(tmp_path):
    result = semsearch("index", str(ROOT / "seeds"), "--out", str(tmp_path / "index"), "--ray", "127.0.0.1:9",
                       env={"SEMSEARCH_MODEL_PATH": "hashing"})
    assert result.returncode == 2  # as for any model or runtime that cannot be had
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in result.stderr
    assert "fix: ray start --head  # then pass the address" in result.stderr and "RAY_AUTH_MODE=token" in result.stderr
    assert not (tmp_path / "index").exists() or not (tmp_path / "index" / "CURRENT").exists()


def test_ray_actors_must_be_a_positive_number(tmp_path):
    result = semsearch("index", str(ROOT / "seeds"), "--out", str(tmp_path / "index"), "--ray", "--ray-actors", "0",
                       env={"SEMSEARCH_MODEL_PATH": "hashing"})
    assert result.returncode == 2 and "--ray-actors must be 1 or more" in result.stderr

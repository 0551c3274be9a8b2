"""Shared fixtures: the real packaged model, a real index built from seeds/ in a temp folder.

The index fixtures (seed_index, searcher, folder_index) are built once per engine: every test of
search and ingest that uses them runs on the FAISS folder and on Milvus Lite. Tests of one
engine's own files use faiss_seed_index."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from indexer.index.build import build_from_folder
from indexer.index.cache import CACHE_FILE
from indexer.text.chunking import sentence_spans
from indexer.text.documents import Document, read_folder
from indexer.model.embedding import TextModel, light_model_for
from indexer.index.engine import open_engine, recorded_model
from indexer.engines.faiss import store
from indexer.search.searcher import Searcher

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SEED_FILE = SEEDS / "putin-committed-to-war-in-ukraine.txt"


SLOW = os.environ.get("SEMSEARCH_SLOW_TESTS") == "1"


def pytest_collection_modifyitems(config, items):
    """Tests marked slow are skipped, saying how to run them, unless SEMSEARCH_SLOW_TESTS=1 (CI)."""
    if SLOW:
        return
    skip = pytest.mark.skip(reason="slow end-to-end check: CI runs it; SEMSEARCH_SLOW_TESTS=1 runs it here")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def embedder() -> TextModel:
    """The packaged model as builds and searches run it: from its recipe (ONNX Runtime and the
    tokenizer, no torch) once any earlier load wrote one, else the full sentence-transformers load.
    Both give the same vectors (tests/test_embedding.py); the recipe loads in a second, not ten."""
    return light_model_for()


from indexer.engines import ENGINES  # noqa: E402 (every engine the registry has)


# Every engine of the registry, and Milvus once more as a server, as replicas reach a cluster (a
# slow check: a `milvus-lite server` per worker).
ENGINE_TARGETS = (*ENGINES, pytest.param("milvus-server", marks=pytest.mark.slow))


@pytest.fixture(scope="session", params=ENGINE_TARGETS)
def engine_target(request, tmp_path_factory):
    """(engine, Milvus server URI or None) for each target; the server lives for the session."""
    if request.param != "milvus-server":
        yield request.param, None
        return
    with milvus_server(tmp_path_factory.mktemp("milvus-server")) as (_, uri):
        yield "milvus", uri


@pytest.fixture()
def engine_kind(engine_target, monkeypatch) -> str:
    """The engine a new index is built with (SEMSEARCH_ENGINE for the command line); for the
    server target, SEMSEARCH_MILVUS_URI names the server while the test runs (in this process and
    every command it starts)."""
    kind, uri = engine_target
    if uri:
        monkeypatch.setenv("SEMSEARCH_MILVUS_URI", uri)
    return kind


# For a test whose Milvus Lite run takes long (Lite starts a server in every process that opens it):
# on both engines, the Milvus one a slow check (CI runs it).
MILVUS_SLOW = pytest.mark.parametrize("engine_kind", ["faiss", pytest.param("milvus", marks=pytest.mark.slow)])


def build_seeds(out: Path, embedder, kind: str, uri: str | None = None) -> Path:
    build_from_folder(SEEDS, out, embedder, progress=False,
                      engine=open_engine(out, embedder.name, embedder.dimension, kind, uri=uri))
    return out


def open_reader(index: Path, model):
    """The index's current snapshot, through the seam (whichever engine holds it)."""
    return open_engine(index, model.name, model.dimension).reader()


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory, embedder, engine_target) -> Path:
    """An index of seeds/ built with the same code as `semsearch index`, on each engine (its
    engine.json names a Milvus server's URI: later commands and services find it there)."""
    kind, uri = engine_target
    return build_seeds(tmp_path_factory.mktemp(f"seed-index-{kind}"), embedder, kind, uri)


@pytest.fixture(scope="session")
def faiss_seed_index(tmp_path_factory, embedder) -> Path:
    """The seed index in a FAISS folder, for tests of that engine's files."""
    return build_seeds(tmp_path_factory.mktemp("seed-index-faiss-files"), embedder, "faiss")


@pytest.fixture(scope="session")
def searcher(seed_index, embedder) -> Searcher:
    return Searcher(open_reader(seed_index, embedder), embedder)


@pytest.fixture()
def seed_copy(seed_index, tmp_path) -> Path:
    """A copy of the seed index on each engine, for other processes (Milvus Lite serves one
    process at a time, and this one holds the original)."""
    target = tmp_path / "seed-copy"
    shutil.copytree(seed_index, target, ignore=shutil.ignore_patterns("LOCK"))
    return target


@pytest.fixture()
def index_copy(faiss_seed_index, tmp_path) -> Path:
    """A private copy of the FAISS seed index that a test may damage."""
    target = tmp_path / "index"
    shutil.copytree(faiss_seed_index, target)
    return target


def segment_file(index: Path, name: str) -> Path:
    """A file of the first segment the current generation of index uses."""
    return index / store.SEGMENTS / store.read_manifest(index)["segments"][0]["name"] / name


def indexed_passages(index: Path, model) -> dict:
    """passage_id -> (Passage, sentence spans as a list) of every live passage, read back from disk."""
    loaded = store.load(index, model.name, model.dimension)
    found = loaded.fetch(loaded.all_ids().tolist())
    return {p.passage.passage_id: (p.passage, p.sentence_spans.tolist()) for p in found.values()}


def cached_rows(index: Path) -> int:
    """Vectors a build running on index has put in its embedding cache so far."""
    try:
        with sqlite3.connect(f"file:{index / CACHE_FILE}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM vectors").fetchone()[0]
    except sqlite3.Error:  # not made yet
        return 0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(index: Path, env: dict | None = None, attempts: int = 3):
    """Start `semsearch serve` on index as a user would (env: extra variables); returns (process,
    base URL) once ready. A free port can be taken by another process (a Milvus server another test
    starts) before the server binds it: then it is started again on another."""
    for _ in range(attempts):
        started = start_server_once(index, env)
        if started is not None:
            return started
    pytest.fail(f"server could not bind a port in {attempts} tries")


def start_server_once(index: Path, env: dict | None):
    """(process, base URL) of a server on a free port, or None when that port was taken meanwhile."""
    import os
    import subprocess
    import sys
    import tempfile
    import time

    import httpx

    port = free_port()
    command = [sys.executable, "-m", "indexer.cli", "serve", "--index", str(index), "--port", str(port)]
    # The log goes to a file: an unread pipe fills up and would block the server mid-request.
    log = tempfile.NamedTemporaryFile("w+", prefix="semsearch-serve-", suffix=".log", delete=False)
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                               stderr=subprocess.STDOUT)
    process.log_path = log.name
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            ready = httpx.get(url + "/readyz", timeout=1)
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if ready.status_code == 200:
            return process, url
        break  # it answers, so loading is over: not ready means it will not become ready
    process.kill()
    process.wait()
    printed = Path(log.name).read_text()
    if "address already in use" in printed.lower():
        return None
    pytest.fail(f"server did not become ready:\n{printed}")


def stop_server(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    Path(process.log_path).unlink(missing_ok=True)


@contextmanager
def served(index: Path, env: dict | None = None):
    """`semsearch serve` on index for the length of a with-block: yields (process, base URL)."""
    process, url = start_server(index, env)
    try:
        yield process, url
    finally:
        stop_server(process)


@pytest.fixture(scope="session")
def live_server():
    """A real server on the index/ that `semsearch index seeds` built (the CI reindex)."""
    index = ROOT / "index"
    if recorded_model(index) is None:
        pytest.fail("index/ is not built: run `semsearch index seeds` first (the README's test command does)")
    process, url = start_server(index)
    yield url
    stop_server(process)


STAND_IN = {"SEMSEARCH_MODEL_PATH": "hashing"}


def local_site():
    from tests.sites import Site

    served = Site()
    yield served
    served.close()


@pytest.fixture()
def site():
    """A local web site (tests/sites.py) the test fills in; closed after the test."""
    yield from local_site()


@pytest.fixture()
def other_site():
    """A second local site, on another port: another origin."""
    yield from local_site()


@pytest.fixture(scope="session")
def two_articles_built(tmp_path_factory):
    """Builds the two-article folder index once per engine (per worker); tests get copies."""
    built = {}

    def get(engine_kind: str) -> tuple[Path, Path]:
        where = (engine_kind, os.environ.get("SEMSEARCH_MILVUS_URI"))  # Milvus Lite or a server
        if where not in built:
            built[where] = two_articles(tmp_path_factory.mktemp(f"two-articles-{engine_kind}"), engine_kind)
        return built[where]
    return get


@pytest.fixture()
def folder_index(tmp_path, engine_kind, two_articles_built):
    """A folder of two articles indexed by `semsearch index` with the stand-in encoder, on each
    engine: a private copy the test may change (on a Milvus server, whose collections a copied
    folder would share, a private build)."""
    if os.environ.get("SEMSEARCH_MILVUS_URI"):
        return two_articles(tmp_path, engine_kind)
    return copy_of(two_articles_built(engine_kind), tmp_path)


@pytest.fixture()
def faiss_folder_index(tmp_path, two_articles_built):
    """The two articles in a FAISS folder, for tests of that engine's files."""
    return copy_of(two_articles_built("faiss"), tmp_path)


def copy_of(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    seeds, index = tmp_path / "seeds", tmp_path / "index"
    shutil.copytree(built[0], seeds)
    shutil.copytree(built[1], index, ignore=shutil.ignore_patterns("LOCK"))
    return seeds, index


def two_articles(tmp_path: Path, engine_kind: str) -> tuple[Path, Path]:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "harbour.txt").write_text("Harbour Reopens\nThe harbour reopened on Monday after a year of repairs.\n")
    (seeds / "dam.txt").write_text("Dam Opens\nThe new dam opened today and will power the valley.\n")
    index = tmp_path / "index"
    assert semsearch("index", str(seeds), "--out", str(index), env={**STAND_IN, "SEMSEARCH_ENGINE": engine_kind}
                     ).returncode == 0
    return seeds, index


# Helpers the test modules share (one place: no test module imports another).


def semsearch(*args: str, cwd=ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the command line as a user would (env: extra environment variables)."""
    return subprocess.run([sys.executable, "-m", "indexer.cli", *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300)


def word_spans(text: str) -> list[tuple[int, int]]:
    """A stand-in tokenizer for narrow tests: one token per word."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def flip(path: Path, at: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    data[at + 1] ^= 0x0F
    path.write_bytes(bytes(data))


ARTICLES = {
    "harbour.txt": "Harbour Reopens After Repairs\nThe harbour reopened on Monday after a year of repairs "
                   "to the old sea wall.\nFishing boats returned within hours, and the mayor promised new "
                   "cranes by spring.\n",
    "rail.txt": "Rail Strike Ends\nTrain drivers returned to work after the union accepted a pay offer of six "
                "percent.\nCommuters welcomed the news after three weeks of cancelled services.\n",
    "dam.txt": "Dam Project Approved\nThe regional council approved a hydroelectric dam on the northern river.\n"
               "Environmental groups said they would challenge the decision in court.\n",
}


def write_seeds(folder, articles):
    folder.mkdir(exist_ok=True)
    for name, text in articles.items():
        (folder / name).write_text(text)
    return folder


UNDATED = ("<html><head><title>Harbour crane</title></head><body><article><h1>A new crane for the harbour</h1>"
           "<p>The harbour board bought a second container crane on Friday, the first in twenty years.</p>"
           "<p>It will arrive by sea from the builder's yard in the spring and be working by the summer.</p>"
           "</article></body></html>")


def rss(base: str, items: list[tuple[str, str, str]]) -> str:
    entries = "".join(f"<item><title>{title}</title><link>{base}{path}</link><pubDate>{date}</pubDate>"
                      f"<category>harbour</category><author>desk@example.org (News Desk)</author></item>"
                      for path, title, date in items)
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>Test news</title>{entries}</channel></rss>'


def listed(index) -> list[str]:
    return [d["doc_id"] for d in json.loads(semsearch("show", "--index", str(index), "--json", env=STAND_IN).stdout)
            ["documents"]]


def make_corpus(count: int, seed: int = 0) -> list[Document]:
    """Documents of 2-6 real sentences of the seed article, recombined (deterministic)."""
    article = next(read_folder(SEEDS)).text
    sentences = [article[s:e] for s, e in sentence_spans(article)]
    rng = np.random.default_rng(seed)
    return [Document(doc_id=f"d{n}", title=f"Report {n}", source=f"https://news.example/{n % 7}/{n}",
                     text=" ".join(sentences[i] for i in rng.choice(len(sentences), rng.integers(2, 7))))
            for n in range(count)]


ARCHIVE = [  # (id, published_at as written, outlet, authors, language, tags)
    ("a1", "2026-03-05T23:30:00-05:00", "Harbour Times", ["Jane Roe"], "en-GB", ["port"]),  # 2026-03-06T04:30Z
    ("a2", "2026-03-05T10:00:00Z", "Wire Daily", ["John Doe", "Jane Roe"], "en", ["port", "labour"]),
    ("a3", "2026-03-04", "Wire Daily", ["Ana Lima"], "pt", ["labour"]),
    ("a4", "2026-02-28T12:00:00+09:00", "Coast Gazette", [], "en", []),  # 2026-02-28T03:00Z
    ("a5", None, "Harbour Times", ["Jane Roe"], "en", ["port"]),
    ("a6", "2026-03-06T00:00:00Z", "coast gazette", ["Sam Park"], "EN-us", ["Port"]),
]


DETAILS = ["Cranes stood idle through the night shift.", "Dockers voted to accept the new pay offer.",
           "A container ship ran aground near the breakwater.", "Fishing boats were told to stay in harbour.",
           "The ferry timetable changes from next week.", "Tugboat crews trained for winter storms."]


WIRE = ("Ukraine and Russia agreed on Sunday to extend the Black Sea grain corridor deal by four months, officials "
        "in Kyiv said, easing fears of a new spike in world food prices.")


def archive_index(tmp_path):
    seeds = tmp_path / "archive"
    seeds.mkdir()
    lines = [json.dumps({"id": i, "title": f"Harbour report {i}", "text": f"Harbour workers and port news, item {i}. "
                         f"{DETAILS[n]}",
                         **({"published_at": at} if at else {}), "outlet": outlet, "authors": authors,
                         "language": language, "tags": tags}) for n, (i, at, outlet, authors, language, tags)
             in enumerate(ARCHIVE)]
    (seeds / "archive.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    index = tmp_path / "index"
    assert semsearch("index", str(seeds), "--out", str(index), env=STAND_IN).returncode == 0
    return index


STORIES = [  # (id, outlet, text): one wire story run by three outlets, another story on the subject, another
    ("wire-grain", "Wire Daily", WIRE),
    ("harbour-grain", "Harbour Times", "KYIV (Wire Daily) - " + WIRE),
    ("coast-grain", "Coast Gazette", WIRE.replace("officials in Kyiv said", "officials in Kyiv told reporters")),
    ("valley-grain", "Valley Post", "Talks on the grain corridor failed on Monday, Russian officials said, and ships "
                                    "waited at anchor off Odesa as insurers raised their prices."),
    ("dam", "Valley Post", "The new dam opened to visitors on Thursday and will power the valley for decades."),
]


CORPUS = [
    {"_id": "d1", "title": "Iceland", "text": "Volcanic eruption in Iceland disrupts air travel across Europe."},
    {"_id": "d2", "title": "Rates", "text": "The central bank raised interest rates to fight inflation."},
    {"_id": "d3", "title": "Malaria", "text": "A new vaccine reduces malaria infections in children."},
    {"_id": "d4", "title": "Football", "text": "The club won the championship after a penalty shootout."},
]


QUESTIONS = Path(__file__).parent / "questions"


def searcher_of(index: Path, model) -> Searcher:
    """A searcher of the index at index through the seam, whatever its engine."""
    return Searcher(open_engine(index, model.name, model.dimension).reader(), model)


def searched(query: str, index, k: int = 10) -> dict:
    """`semsearch search --json` on index with the stand-in encoder: the results by doc_id."""
    printed = semsearch("search", query, "--index", str(index), "--json", "-k", str(k), env=STAND_IN)
    assert printed.returncode == 0, printed.stderr
    return {r["doc_id"]: r for r in json.loads(printed.stdout)["results"]}


@contextmanager
def milvus_server(data: Path, port: int | None = None):
    """`milvus-lite server` on a free 127.0.0.1 port (or this one: a restart), as a Milvus server or
    cluster is reached (over gRPC at http://host:port); yields (process, uri) once it listens."""
    import socket
    import time

    port = port or free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "milvus-lite"), "server", "--data-dir", str(data),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@contextmanager
def searching(url: str, clients: int, query: str = "war and peace", timeout: float = 60):
    """`clients` threads searching url over and over while the with-block runs (writes, merges);
    yields the list their answers' status codes go into, complete once the block has ended."""
    import threading

    import httpx

    stop, statuses = threading.Event(), []

    def search() -> None:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            while not stop.is_set():
                statuses.append(client.get("/search", params={"q": query, "k": 5}).status_code)

    threads = [threading.Thread(target=search) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def post_each(writer, documents) -> None:
    """POST /documents once per document (one small change each), every answer 200."""
    for document in documents:
        body = {"documents": [{"id": document.doc_id, "title": document.title, "text": document.text}]}
        answer = writer.post("/documents", json=body)
        assert answer.status_code == 200, answer.text


def metric_values(text: str) -> dict:
    """{(sample name, sorted labels): value} from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}

"""The Milvus engine (Milvus Lite, embedded) behind the seam: the same answers as the FAISS engine,
filters inside the engine, all-or-nothing writes, the commands and the service unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from indexer.index.build import build_from_documents, build_index, update_documents
from indexer.text.documents import Document, read_folder
from indexer.model.embedding import light_model_for
from indexer.index.engine import ChangeSet, open_engine
from indexer.text.metadata import Metadata
from indexer.eval.questions import read_questions
from indexer.errors import MODES
from indexer.search.searcher import Query, Searcher
from tests.conftest import ROOT, SEEDS, STAND_IN, free_port, semsearch


ARTICLES = ROOT / "tests" / "questions" / "articles"
QUESTIONS = ROOT / "tests" / "questions" / "questions.jsonl"


def dated(doc_id: str, text: str, published: str, outlet: str, authors=(), tags=(), language="en") -> Document:
    return Document(doc_id, doc_id.replace("-", " ").title(), f"https://news.example/{doc_id}", text,
                    Metadata(published_at=published, outlet=outlet, authors=tuple(authors), tags=tuple(tags),
                             language=language))


HARBOUR = [
    dated("harbour-crane", "The harbour crane failed on Monday and ships waited at the quay for a day.",
          "2026-03-02T08:00:00Z", "Coast Herald", ["Ana Ruiz"], ["port", "transport"], "en-GB"),
    dated("harbour-fees", "Harbour fees rise next month, the port authority said, to pay for dredging.",
          "2026-05-10T12:00:00Z", "Daily Ledger", ["Tom Berg"], ["port", "money"]),
    dated("harbour-festival", "A festival fills the old harbour with boats, music and food stalls.",
          "2025-08-20T18:00:00Z", "Coast Herald", ["Ana Ruiz", "Lee Park"], ["culture"], "fr"),
]


# The tests that share `both` run on one worker, which builds it once (--dist loadgroup).
ON_BOTH = pytest.mark.xdist_group("milvus-both")


@pytest.fixture(scope="module")
def both(tmp_path_factory, embedder):
    """The same documents (seeds, the question articles, three dated ones) in a FAISS folder and in
    Milvus Lite, built with the real model."""
    documents = list(read_folder(SEEDS)) + list(read_folder(ARTICLES)) + HARBOUR
    faiss_root, milvus_root = tmp_path_factory.mktemp("faiss"), tmp_path_factory.mktemp("milvus")
    build_from_documents(documents, faiss_root, embedder, progress=False)
    milvus = open_engine(milvus_root, embedder.name, embedder.dimension, "milvus")
    build_from_documents(documents, milvus_root, embedder, progress=False, engine=milvus)
    faiss = open_engine(faiss_root, embedder.name, embedder.dimension)
    return Searcher(faiss.reader(), embedder), Searcher(milvus.reader(), embedder), milvus_root


@ON_BOTH
def test_milvus_ranks_the_questions_as_faiss_does(both):
    faiss, milvus, _ = both
    questions = read_questions(QUESTIONS)
    same_first = same_article = 0
    for question in questions:
        vector = faiss.embedder.embed_query(question.text)
        assert [i for i, _ in milvus.index.dense(vector, 20)] == [i for i, _ in faiss.index.dense(vector, 20)]
        want, got = (s.search(Query(question.text, k=5, min_relevance=0)) for s in (faiss, milvus))
        same_first += want[0].passage.passage_id == got[0].passage.passage_id
        same_article += want[0].passage.doc_id == got[0].passage.doc_id
    assert same_article == len(questions)
    assert same_first >= 0.95 * len(questions)


@ON_BOTH
def test_relevance_and_keyword_scores_agree(both):
    faiss, milvus, _ = both
    for text in ("harbour fees dredging", "flibbertigibbet zorkmid quux", "over a million casualties"):
        want, got = (s.search(Query(text, k=5, mode="keyword", min_relevance=0)) for s in (faiss, milvus))
        assert [h.passage.passage_id for h in got] == [h.passage.passage_id for h in want]
        for a, b in zip(want, got):
            assert b.relevance == pytest.approx(a.relevance, abs=0.05)
    nonsense = milvus.search(Query("flibbertigibbet zorkmid quux"))
    assert nonsense == []


@ON_BOTH
@pytest.mark.parametrize("filters", [
    {"doc_ids": ("harbour-fees", "harbour-crane")}, {"sources": ("https://news.example/harbour-festival",)},
    {"published_after": "2026-01-01"}, {"published_before": "2026-03-02"},
    {"outlets": ("coast herald",)}, {"authors": ("Lee Park",)}, {"languages": ("en",)}, {"tags": ("PORT",)}])
def test_every_filter_is_applied_inside_milvus(both, filters):
    faiss, milvus, _ = both
    for mode in MODES:
        want, got = ({h.passage.doc_id for h in s.search(Query("harbour", k=50, mode=mode, min_relevance=0,
                                                               **filters))} for s in (faiss, milvus))
        assert got == want and got


def test_writes_replace_and_delete_and_a_failed_one_changes_nothing(tmp_path, embedder):
    engine = open_engine(tmp_path, embedder.name, embedder.dimension, "milvus")
    build_from_documents(HARBOUR, tmp_path, embedder, progress=False, engine=engine)
    update_documents(tmp_path, embedder, [dated("harbour-fees", "Harbour fees fall after all: the dredging is "
                                                "paid by the state.", "2026-06-01T09:00:00Z", "Daily Ledger")],
                     ["harbour-festival"], engine=engine)
    searcher = Searcher(engine.reader(), embedder)
    hits = searcher.search(Query("who pays for the dredging", k=10, min_relevance=0))
    assert {h.passage.doc_id for h in hits} == {"harbour-fees", "harbour-crane"}
    assert "fall after all" in next(h for h in hits if h.passage.doc_id == "harbour-fees").passage.text
    assert searcher.index.info.documents == 2
    kept = searcher.index.document("harbour-fees")
    assert kept.document.text.startswith("Harbour fees fall") and len(kept.passages) == 1

    def failing():
        yield from ()
        raise OSError("disk full")

    writer, before = engine.writer(), engine.current()
    with pytest.raises(OSError):
        writer.apply(ChangeSet(upserts=failing(), deletes=["harbour-crane"]))
    assert engine.current() == before
    again = Searcher(engine.reader(), embedder).search(Query("who pays for the dredging", k=10, min_relevance=0))
    assert [h.passage.passage_id for h in again] == [h.passage.passage_id for h in hits]
    update_documents(tmp_path, embedder, [], ["harbour-crane"], engine=engine)  # the next writer tidies up
    assert set(engine.writer().live_documents()) == {"harbour-fees"}
    assert engine.maintain()  # replaced rows are removed once no search reads them


def test_a_services_term_statistics_follow_every_write_and_leave_out_a_write_never_committed(tmp_path):
    """A service keeps every term's document frequency (engine.prepare), read again only for the
    terms each write changed: its keyword weights equal those a reader asks Milvus for, term by term."""
    from indexer.engines.milvus.reader import MilvusReader
    from indexer.model.hashing_encoder import HashingEncoder
    from indexer.text.keyword import Analyzer

    model, analyzer = HashingEncoder(), Analyzer()  # the stand-in: only counts are under test
    engine = open_engine(tmp_path, model.name, model.dimension, "milvus")
    build_from_documents(HARBOUR, tmp_path, model, progress=False, engine=engine)
    crane = "The crane at the quay is mended; ships unload again and dredging goes on."
    words = analyzer.terms(" ".join(d.text for d in HARBOUR) + " " + crane + " festival zebra")

    def weights_agree() -> dict[str, float]:
        engine.prepare()
        kept, state = engine.reader(), engine.milvus.state()
        assert kept.table is not None  # searches ask nothing about terms
        asked = MilvusReader(engine.milvus, state)
        assert asked.table is None
        weights = kept.term_weights(words)
        assert weights == asked.term_weights(words)
        return weights

    first = weights_agree()
    update_documents(tmp_path, model, [dated("harbour-crane", crane, "2026-03-03T08:00:00Z", "Coast Herald")],
                     ["harbour-festival"], engine=engine)
    after = weights_agree()
    assert after["festiv"] == 0 < first["festiv"] and after["mend"] > 0 == first.get("mend", 0)

    writer = engine.writer()
    count_terms = writer.count_terms

    def counted_then_died(*args):  # rows and term counts written, then the write dies before its commit
        count_terms(*args)
        raise OSError("disk full")

    writer.count_terms = counted_then_died
    zebra = dated("zebra-crossing", "A zebra crossing is painted by the quay.", "2026-04-01T08:00:00Z", "Coast Herald")
    with pytest.raises(OSError):
        writer.apply(ChangeSet(upserts=list(prepare_of(engine, model, [zebra])), deletes=[]))
    assert weights_agree()["zebra"] == 0
    update_documents(tmp_path, model, [], ["harbour-fees"], engine=engine)  # committed after the failed one
    assert weights_agree()["zebra"] == 0  # the failed write's counts never became current


def test_indexes_built_before_sentence_vectors_or_word_pieces_moved_into_passage_rows_still_search_and_take_writes(
        tmp_path, monkeypatch):
    """Layout 1 keeps sentence vectors in a collection of their own, layout 2 in the passage rows,
    layout 3 adds word pieces (late interaction). Older builds search and take writes as they are
    (without late interaction: they have no pieces); `index --force` moves them to the newest
    layout, reusing every vector it can and embedding only for the pieces they lack."""
    from indexer.engines.milvus import writer as milvus_writer
    from indexer.engines.milvus.schema import LAYOUT
    from indexer.model.hashing_encoder import HashingEncoder

    model = HashingEncoder()
    engines = {}
    for layout in (1, 2, LAYOUT):
        monkeypatch.setattr(milvus_writer, "LAYOUT", layout)
        engines[layout] = open_engine(tmp_path / f"layout{layout}", model.name, model.dimension, "milvus")
        build_from_documents(HARBOUR, tmp_path / f"layout{layout}", model, progress=False, engine=engines[layout])
    monkeypatch.undo()  # writes from here on are the code's own: a build keeps its layout
    fees = dated("harbour-fees", "Harbour fees fall after all. The state pays for the dredging. Ships come back.",
                 "2026-06-01T09:00:00Z", "Daily Ledger")
    for layout, engine in engines.items():
        update_documents(engine.root, model, [fees], [], engine=engine)

    def answers(engine):
        hits = Searcher(engine.reader(), model).search(Query("who pays for the dredging", k=5, min_relevance=0))
        return [(h.passage.passage_id, round(h.relevance, 4), h.highlight) for h in hits]

    assert answers(engines[1]) == answers(engines[2]) and answers(engines[1])
    assert answers(engines[LAYOUT]) and [a[0] for a in answers(engines[LAYOUT])][0] == answers(engines[1])[0][0]
    for layout, engine in engines.items():
        reader = engine.reader()
        assert reader.state["layout"] == layout
        sentence_rows = engine.milvus.count(reader.names.sentences, "id >= 0")
        assert (sentence_rows > 0) == (layout == 1)
        assert bool(reader.pieces(list(range(1, 50)))) == (layout >= 3)
    rebuilt = build_index(engines[1].root, model, [HARBOUR[0], HARBOUR[2]], force=True, engine=engines[1])
    assert engines[1].reader().state["layout"] == LAYOUT
    assert rebuilt.passages_embedded == rebuilt.passages  # the pieces were never stored: embedded for them
    kept = build_index(engines[LAYOUT].root, model, [HARBOUR[0], HARBOUR[2]], force=True, engine=engines[LAYOUT])
    assert kept.passages_embedded == 0  # every vector and piece reused
    assert answers(engines[1]) == answers(engines[LAYOUT])


def prepare_of(engine, model, documents):
    from indexer.index.build import prepare
    from indexer.text.documents import StoredDocument, content_hash

    stored = [StoredDocument(d, "api", content_hash(d)) for d in documents]
    return prepare(stored, model, engine.writer(), engine.root, False, [0])


def test_the_commands_use_the_recorded_engine(tmp_path):
    index = tmp_path / "index"
    built = semsearch("index", str(SEEDS), "--out", str(index), "--engine", "milvus", env=STAND_IN)
    assert built.returncode == 0, built.stderr
    assert json.loads((index / "engine.json").read_text())["engine"] == "milvus"
    assert "up to date" in semsearch("index", str(SEEDS), "--out", str(index), "--check", env=STAND_IN).stdout
    found = semsearch("search", "why won't Russia stop", "--index", str(index), "--json", env=STAND_IN)
    assert found.returncode == 0 and json.loads(found.stdout)["results"]
    other = semsearch("index", str(SEEDS), "--out", str(index), "--engine", "faiss", env=STAND_IN)
    assert other.returncode == 2 and "held by the milvus engine" in other.stderr
    assert not list(index.glob("gen-*"))


def test_the_service_ingests_and_recovers_when_milvus_is_back(tmp_path):
    index = tmp_path / "index"
    assert semsearch("index", str(SEEDS), "--out", str(index), "--engine", "milvus", env=STAND_IN).returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pymilvus import MilvusClient; "
                               "MilvusClient(sys.argv[1]); print('open', flush=True); time.sleep(600)",
                               str(index / "milvus.db")], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "open"
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "indexer.cli", "serve", "--index", str(index), "--port",
                                   str(port)], cwd=ROOT, env={**os.environ, **STAND_IN, "SEMSEARCH_API_KEY": "k"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            down = answer(url + "/readyz")
            assert down.status_code == 503 and "another process" in down.json()["error"]["message"]
            holder.kill()
            holder.wait()
            deadline = time.monotonic() + 60
            while httpx.get(url + "/readyz", timeout=10).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.5)
            ready = httpx.get(url + "/readyz", timeout=10).json()
            assert ready["generation"].startswith("milvus-")
            key = {"Authorization": "Bearer k"}
            posted = httpx.post(url + "/documents", headers=key, timeout=60, json={"documents": [
                {"id": "ferry-1", "title": "Ferry", "text": "The island ferry runs twice a day from the quay."}]})
            assert posted.status_code == 200, posted.text
            hits = httpx.get(url + "/search", params={"q": "island ferry", "k": 1}, timeout=10).json()["results"]
            assert hits[0]["doc_id"] == "ferry-1"
            assert httpx.delete(url + "/documents/ferry-1", headers=key, timeout=60).status_code == 200
            hits = httpx.get(url + "/search", params={"q": "island ferry", "k": 5}, timeout=10).json()["results"]
            assert "ferry-1" not in {h["doc_id"] for h in hits}
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        holder.kill()


def answer(url: str) -> httpx.Response:
    """The first answer of a server that is starting."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return httpx.get(url, timeout=10)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_an_index_moves_to_milvus_and_back_without_embedding_again(tmp_path):
    index = tmp_path / "index"
    assert semsearch("index", str(SEEDS), "--out", str(index), env=STAND_IN).returncode == 0
    model = light_model_for("hashing")
    update_documents(index, model, [HARBOUR[0]], [])  # one ingested over HTTP: it must keep its origin

    def answers() -> list:
        found = semsearch("search", "harbour crane and the war", "--index", str(index), "--json", "-k", "10",
                          "--min-relevance", "0", env=STAND_IN)
        assert found.returncode == 0, found.stderr
        return [(r["passage_id"], r["doc_id"], round(r["score"], 4)) for r in json.loads(found.stdout)["results"]]

    before = answers()
    moved = semsearch("move", str(index), "--to", "milvus", env=STAND_IN)
    assert moved.returncode == 0, moved.stderr
    assert "embedded 0)" in moved.stdout and json.loads((index / "engine.json").read_text())["engine"] == "milvus"
    assert answers() == before
    shown = semsearch("show", "harbour-crane", "--index", str(index), "--json", env=STAND_IN)
    assert json.loads(shown.stdout)["origin"] == "api"  # (in another process: Milvus Lite serves one)
    back = semsearch("move", str(index), "--to", "faiss", env=STAND_IN)
    assert back.returncode == 0 and "embedded 0)" in back.stdout, back.stderr
    assert answers() == before
    again = semsearch("move", str(index), "--to", "faiss", env=STAND_IN)
    assert again.returncode == 2 and "already held by the faiss engine" in again.stderr


def test_ingests_under_concurrent_searches_fail_no_request(tmp_path):
    from indexer.model.hashing_encoder import HashingEncoder
    from tests.conftest import make_corpus, post_each, searching, start_server, stop_server

    corpus, model = make_corpus(46), HashingEncoder()  # 6 ingests under load (each ~2 s on Milvus Lite)
    engine = open_engine(tmp_path, model.name, model.dimension, "milvus")
    build_from_documents(corpus[:40], tmp_path, model, progress=False, engine=engine)
    engine.close()  # the server opens the Milvus Lite file next
    process, url = start_server(tmp_path, {**STAND_IN, "SEMSEARCH_API_KEY": "k", "SEMSEARCH_RELOAD_INTERVAL": "0.2"})
    try:
        with searching(url, clients=3) as statuses, \
                httpx.Client(base_url=url, timeout=120, headers={"Authorization": "Bearer k"}) as writer:
            post_each(writer, corpus[40:])
            assert writer.delete("/documents/d45").status_code == 200
            ready = httpx.get(url + "/readyz", timeout=10).json()
            for document in corpus[40:]:
                found = writer.get("/search", params={"q": document.text[:80], "k": 5, "doc_id": document.doc_id,
                                                      "min_relevance": 0}).json()["results"]
                assert bool(found) == (document.doc_id != "d45")
    finally:
        stop_server(process)
    assert statuses and set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200][:5]}"
    assert ready["documents"] == 45


def test_a_damaged_milvus_index_is_found_by_check_and_repaired_from_its_documents(tmp_path):
    from indexer.engines.milvus.client import Names
    from indexer.index.repair import repair_index

    model = light_model_for("hashing")
    engine = open_engine(tmp_path, model.name, model.dimension, "milvus")
    build_from_documents(HARBOUR, tmp_path, model, progress=False, engine=engine)
    reader = engine.reader()
    names = Names.of(engine.collection, reader.state["build"])
    lost = [i for i, _ in reader.dense(model.embed_query("harbour fees"), 2)]
    engine.milvus.delete(names.passages, f"id in {lost}")  # passages gone behind the index's back
    damage = engine.inspect()
    assert not damage.intact and "live passages" in damage.problems[0]
    assert {d.document.doc_id for d in damage.recoverable} == {d.doc_id for d in HARBOUR}
    summary = repair_index(tmp_path, model, engine)
    assert summary.generation and engine.inspect().intact
    searcher = Searcher(engine.reader(), model)
    assert searcher.index.info.documents == 3
    assert {h.passage.doc_id for h in searcher.search(Query("harbour fees dredging", k=10, min_relevance=0))} == \
        {d.doc_id for d in HARBOUR}


@pytest.mark.slow  # starts a Milvus Lite server
def test_a_stalled_milvus_server_costs_a_request_its_deadline_and_never_holds_up_the_replica(tmp_path):
    """Milvus stops answering (SIGSTOP): a search gives 503 with a fix after SEMSEARCH_MILVUS_TIMEOUT,
    /healthz and /readyz answer at once meanwhile, and searches answer again when Milvus does."""
    import signal
    import threading

    from tests.conftest import milvus_server, served

    with milvus_server(tmp_path / "milvus") as (server, uri):
        index = tmp_path / "index"
        built = semsearch("index", str(SEEDS), "--out", str(index), "--engine", "milvus", "--milvus-uri", uri,
                          env=STAND_IN)
        assert built.returncode == 0, built.stderr
        with served(index, STAND_IN | {"SEMSEARCH_MILVUS_TIMEOUT": "2"}) as (_, url):
            assert httpx.get(f"{url}/search", params={"q": "war"}, timeout=30).status_code == 200
            os.kill(server.pid, signal.SIGSTOP)
            try:
                answers = []
                asking = threading.Thread(target=lambda: answers.append(
                    httpx.get(f"{url}/search", params={"q": "drone production"}, timeout=60)))
                started = time.monotonic()
                asking.start()
                time.sleep(0.3)
                probe = time.monotonic()
                assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
                assert time.monotonic() - probe < 0.5  # the stalled search holds no one up
                asking.join()
                stalled = answers[0]
                assert stalled.status_code == 503 and time.monotonic() - started < 15, stalled.text
                assert "fix" in stalled.json()["error"] and "Milvus" in stalled.json()["error"]["message"]
            finally:
                os.kill(server.pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                again = httpx.get(f"{url}/search", params={"q": "drone production"}, timeout=30)
                if again.status_code == 200:
                    break
                time.sleep(0.5)
            assert again.status_code == 200 and again.json()["results"]


@pytest.mark.slow  # starts a Milvus Lite server and two replicas
def test_two_replicas_on_one_milvus_server_share_every_write(tmp_path):
    """Two `semsearch serve` replicas on one Milvus server (each with its own small folder naming
    the index): a write to either is searchable on both within about a second, and writes sent to
    both at once are all kept, with the index's counts whole."""
    import shutil
    import threading

    from tests.conftest import milvus_server, served

    key = {"SEMSEARCH_API_KEY": "k"}
    with milvus_server(tmp_path / "milvus") as (_, uri):
        first, second = tmp_path / "replica-1", tmp_path / "replica-2"
        built = semsearch("index", str(SEEDS), "--out", str(first), "--engine", "milvus", "--milvus-uri", uri,
                          env=STAND_IN)
        assert built.returncode == 0, built.stderr
        second.mkdir()
        shutil.copy(first / "engine.json", second / "engine.json")  # the index's engine, URI and collection
        with served(first, STAND_IN | key) as (_, one), served(second, STAND_IN | key) as (_, two):
            base = httpx.get(f"{two}/readyz").json()["documents"]
            posted = httpx.post(f"{one}/documents", headers={"Authorization": "Bearer k"}, timeout=60, json={
                "documents": [{"id": "quay-note", "text": "Quay Note\nThe quayside kiosk reopens on Friday."}]})
            assert posted.status_code == 200, posted.text
            written, seen = time.monotonic(), None
            while time.monotonic() - written < 10 and seen is None:
                hits = httpx.get(f"{two}/search", params={"q": "quayside kiosk", "mode": "keyword"}).json()["results"]
                seen = time.monotonic() - written if any(h["doc_id"] == "quay-note" for h in hits) else None
            assert seen is not None and seen < 1.0, seen  # the reload interval (0.5 s) and a reload

            failures: list = []

            def write(url: str, name: str) -> None:
                for n in range(8):
                    answer = httpx.post(f"{url}/documents", headers={"Authorization": "Bearer k"}, timeout=120, json={
                        "documents": [{"id": f"{name}-{n}", "text": f"Note {n}\nThe {name} harbour note number {n}."}]})
                    if answer.status_code != 200:
                        failures.append((name, n, answer.status_code, answer.text[:200]))

            writers = [threading.Thread(target=write, args=(url, name)) for url, name in ((one, "east"), (two, "west"))]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join()
            assert failures == []
            time.sleep(1.5)  # both replicas reload
            for url in (one, two):
                ready = httpx.get(f"{url}/readyz").json()
                listed = httpx.get(f"{url}/documents", headers={"Authorization": "Bearer k"},
                                   params={"limit": 1000}).json()
                assert ready["documents"] == listed["total"] == base + 17, (ready, listed["total"])
                assert {f"{side}-{n}" for side in ("east", "west") for n in range(8)} <= \
                    {d["doc_id"] for d in listed["documents"]}
        from indexer.model.hashing_encoder import HashingEncoder

        stand_in = HashingEncoder()
        engine = open_engine(first, stand_in.name, stand_in.dimension)
        assert engine.inspect().intact, engine.inspect().problems


@pytest.mark.slow  # starts a Milvus Lite server
def test_a_write_waits_for_another_writers_lease_and_gives_up_naming_it(tmp_path, monkeypatch):
    """The write lease (Milvus has no compare-and-set): a second writer waits while another holds
    it, gives up with WriteBusy when told to wait no longer, and takes it once it is free, whatever
    process held it; a holder that died frees it by expiry."""
    from indexer.engines.milvus import client as milvus_client
    from indexer.errors import WriteBusy
    from indexer.model.hashing_encoder import HashingEncoder
    from tests.conftest import milvus_server

    stand_in = HashingEncoder()
    with milvus_server(tmp_path / "milvus") as (_, uri):
        engine = open_engine(tmp_path / "a", stand_in.name, stand_in.dimension, "milvus", uri=uri)
        build_from_documents(HARBOUR, tmp_path / "a", stand_in, progress=False, engine=engine)
        other = milvus_client.Milvus(uri, None, engine.collection)  # as another replica's process would
        other.state_collection()
        other.write_lease("replica-2:4242:abc")  # held elsewhere, renewed a moment ago
        with pytest.raises(WriteBusy, match="another writer"):
            with engine.milvus.lease(wait=1):
                pass
        assert engine.maintain() == []  # upkeep does not wait: it runs again later
        other.write_lease(None)
        with engine.milvus.lease(wait=5):
            assert other.lease_holder() == engine.milvus.holder is not None
        assert other.lease_holder() is None
        monkeypatch.setattr(milvus_client, "LEASE_SECONDS", 2.0)
        other.write_lease("replica-3:99:dead")  # killed while holding it: never renewed
        time.sleep(2.1)
        update_documents(tmp_path / "a", stand_in, [], ["harbour-fees"], engine=engine)
        assert set(engine.writer().live_documents()) == {"harbour-crane", "harbour-festival"}

        def embedding_slowly():
            time.sleep(3)  # a large batch being embedded: longer than the lease's life
            yield from ()

        engine.writer().apply(ChangeSet(upserts=embedding_slowly(), deletes=["harbour-crane"]))  # renewed meanwhile
        assert set(engine.writer().live_documents()) == {"harbour-festival"}


@pytest.mark.slow  # starts, kills and restarts a Milvus Lite server
def test_a_replica_answers_503_while_its_milvus_server_is_down_and_loses_nothing_acknowledged(tmp_path):
    """Milvus killed with -9: searches and writes answer 503 with a fix at once (never 500, never a
    hang), /healthz stays up; Milvus restarted on its data: the replica recovers by itself, with
    every acknowledged write and none of the refused ones."""
    from urllib.parse import urlsplit

    from tests.conftest import milvus_server, served

    key = {"Authorization": "Bearer k"}
    index = tmp_path / "index"

    def post(url: str, doc_id: str, text: str) -> httpx.Response:
        return httpx.post(f"{url}/documents", headers=key, timeout=60,
                          json={"documents": [{"id": doc_id, "text": text}]})

    with milvus_server(tmp_path / "milvus") as (server, uri):
        built = semsearch("index", str(SEEDS), "--out", str(index), "--engine", "milvus", "--milvus-uri", uri,
                          env=STAND_IN)
        assert built.returncode == 0, built.stderr
        port = urlsplit(uri).port
        with served(index, STAND_IN | {"SEMSEARCH_API_KEY": "k", "SEMSEARCH_MILVUS_TIMEOUT": "3"}) as (_, url):
            assert post(url, "kept-note", "Kept Note\nThe lighthouse keeper logged the storm at dawn.").status_code == 200
            server.kill()
            server.wait()
            started = time.monotonic()
            searched = httpx.get(f"{url}/search", params={"q": "lighthouse keeper"}, timeout=60)
            assert searched.status_code == 503 and "Milvus" in searched.json()["error"]["fix"], searched.text
            refused = post(url, "refused-note", "Refused Note\nThe tide tables for May are printed.")
            assert refused.status_code == 503 and "Milvus" in refused.json()["error"]["message"], refused.text
            assert time.monotonic() - started < 30 and httpx.get(f"{url}/healthz").status_code == 200
            with milvus_server(tmp_path / "milvus", port):  # the same server back, on its own data
                deadline, found = time.monotonic() + 60, []
                while time.monotonic() < deadline and not found:
                    answered = httpx.get(f"{url}/search", params={"q": "lighthouse keeper", "mode": "keyword"},
                                         timeout=60)
                    found = [h["doc_id"] for h in answered.json()["results"]] if answered.status_code == 200 else []
                    time.sleep(0.5)
                assert "kept-note" in found
                listed = httpx.get(f"{url}/documents", headers=key, params={"limit": 1000}).json()["documents"]
                assert "refused-note" not in {d["doc_id"] for d in listed}
                assert post(url, "after-note", "After Note\nThe harbour reopened after the storm.").status_code == 200


@pytest.mark.slow  # starts a Milvus Lite server and two replicas, and waits out a dead writer's lease
def test_a_replica_killed_in_the_middle_of_a_write_loses_nothing_acknowledged(tmp_path):
    """Replica 1 is killed (-9) once its write has put rows into Milvus but before it commits:
    every write acknowledged before is still there, the killed write is all or nothing, replica 2
    writes again once the dead writer's lease has expired, and the next write tidies away what the
    killed one left, so the index checks whole."""
    import contextlib
    import shutil
    import signal
    import threading

    from indexer.engines.milvus.client import LEASE_SECONDS, Milvus, Names
    from indexer.engines.milvus.writer import MilvusWriter
    from indexer.index.folder import read_record
    from indexer.model.hashing_encoder import HashingEncoder
    from tests.conftest import milvus_server, served, start_server, stop_server

    key, stand_in = {"Authorization": "Bearer k"}, HashingEncoder()
    first, second = tmp_path / "replica-1", tmp_path / "replica-2"

    def post(url: str, documents: list[dict]) -> httpx.Response:
        return httpx.post(f"{url}/documents", headers=key, timeout=120, json={"documents": documents})

    def note(name: str, words: int = 12) -> dict:
        return {"id": name, "text": f"{name.title()}\n" + " ".join(f"The {name} harbour note {n}." for n in range(words))}

    with milvus_server(tmp_path / "milvus") as (_, uri):
        assert semsearch("index", str(SEEDS), "--out", str(first), "--engine", "milvus", "--milvus-uri", uri,
                         env=STAND_IN).returncode == 0
        second.mkdir()
        shutil.copy(first / "engine.json", second / "engine.json")
        watcher = Milvus(uri, None, read_record(first)["collection"])  # the test's own view of the index
        env = STAND_IN | {"SEMSEARCH_API_KEY": "k"}
        victim, one = start_server(first, env)
        try:
            with served(second, env) as (_, two):
                acknowledged = [f"kept-{n}" for n in range(4)]
                for n, name in enumerate(acknowledged):
                    assert post(one if n % 2 else two, [note(name)]).status_code == 200
                committed = watcher.state()
                names = Names.of(watcher.collection, committed["build"])
                batch = [note(f"batch-{n}", 200) for n in range(100)]  # about 2,000 passages: a long write

                def send() -> None:
                    with contextlib.suppress(httpx.HTTPError):  # its replica dies before it answers
                        post(one, batch)

                threading.Thread(target=send, daemon=True).start()
                deadline = time.monotonic() + 60  # its documents' rows are the write's first
                while time.monotonic() < deadline and not watcher.count(names.documents,
                                                                        f"born > {committed['generation']}"):
                    time.sleep(0.02)
                victim.send_signal(signal.SIGKILL)  # rows written, nothing committed yet
                victim.wait()
                after = watcher.state()
                assert after["generation"] == committed["generation"], "the write committed before the kill"

                started = time.monotonic()  # the dead writer's lease expires; replica 2 writes again
                assert post(two, [note("after-kill")]).status_code == 200
                waited = time.monotonic() - started
                assert waited <= LEASE_SECONDS + 10, waited
                listed = {d["doc_id"] for d in httpx.get(f"{two}/documents", headers=key,
                                                         params={"limit": 1000}).json()["documents"]}
                assert set(acknowledged) | {"after-kill"} <= listed
                assert not {d["id"] for d in batch} & listed  # the killed write left nothing searchable
                found = httpx.get(f"{two}/search", params={"q": "batch-7 harbour note", "mode": "keyword",
                                                            "min_relevance": 0}).json()["results"]
                assert not any(h["doc_id"].startswith("batch-") for h in found)
        finally:
            if victim.poll() is None:
                stop_server(victim)
        engine = MilvusWriter(watcher, stand_in.name, stand_in.dimension)
        assert watcher.count(names.documents, f"born > {watcher.state()['generation']}") == 0  # tidied
        assert open_engine(first, stand_in.name, stand_in.dimension).inspect().intact
        assert {"after-kill", *acknowledged} <= set(engine.live_documents())

"""The engine contract (indexer/index/engine.py), once for every engine in the registry: every
method of Engine, IndexReader and IndexWriter, through the seam only. A new engine passes this
module before anything else runs on it. The stand-in encoder: only machinery is under test."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.engines import ENGINES
from indexer.index.build import build_from_documents, chunk, update_documents
from indexer.index.engine import ChangeSet, IndexInfo, StoredDocument, engine_class, open_engine
from indexer.model.hashing_encoder import HashingEncoder, words
from indexer.model.pieces import PIECE_DIMENSION
from indexer.text.documents import Document
from indexer.text.keyword import Analyzer
from indexer.text.metadata import Filters, Metadata, time_bound

# Each engine's tests share one index, built once on one worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("engine-contract")

STORIES = [
    Document("quay-crane", "Quay Crane Fails", "https://coast.example/crane", "Quay Crane Fails\nThe quay crane failed "
             "on Monday and ships waited at the harbour for a day.\n\nEngineers replaced a cable by the evening.",
             Metadata(published_at="2026-03-02T08:00:00Z", outlet="Coast Herald", authors=("Ana Ruiz",),
                      tags=("port",), language="en")),
    Document("bridge-toll", "Bridge Toll Rises", "https://ledger.example/toll", "Bridge Toll Rises\nThe toll on the "
             "river bridge rises in May to pay for new bearings.\n\nDrivers said the rise was steep.",
             Metadata(published_at="2026-04-10T12:00:00Z", outlet="Daily Ledger", tags=("roads",), language="en")),
    Document("choir-tour", "Choir Tour", "https://coast.example/choir", "Choir Tour\nThe town choir sets off on a "
             "tour of six cathedrals this summer.", Metadata(outlet="Coast Herald", language="en")),
]


# Every engine of the registry, and Milvus once more as a server (how replicas share an index): a
# `milvus-lite server` on a free port, reached over gRPC as a Milvus cluster is (a slow check).
TARGETS = (*ENGINES, pytest.param("milvus-server", marks=pytest.mark.slow))


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    from tests.conftest import milvus_server

    with milvus_server(tmp_path_factory.mktemp("milvus-server")) as (_, uri):
        yield uri


@pytest.fixture(scope="module", params=TARGETS)
def built(request, tmp_path_factory):
    """(engine, model, root) with STORIES built into a fresh index of each engine."""
    model = HashingEncoder()
    root = tmp_path_factory.mktemp(request.param)
    kind, options = request.param, {}
    if kind == "milvus-server":
        kind, options = "milvus", {"uri": request.getfixturevalue("milvus_uri")}
    engine = open_engine(root, model.name, model.dimension, kind, **options)
    build_from_documents(STORIES, root, model, progress=False, engine=engine)
    yield engine, model, root
    engine.close()


def test_the_index_reports_itself_alike_to_readers_writers_and_the_folder(built):
    engine, model, root = built
    reader, health = engine.reader(), engine.writer().health()
    assert engine.current() == reader.generation == reader.info.generation == health.generation is not None
    assert isinstance(reader.info, IndexInfo) and isinstance(health, IndexInfo)
    assert (reader.info.documents, reader.info.passages) == (health.documents, health.passages) == (3, 5)
    assert reader.info.model == health.model == model.name and health.chunker
    assert type(engine).recorded_model(root) == {"name": model.name, "dimension": model.dimension}
    assert engine.describe()["engine"] == next(name for name in ENGINES if isinstance(engine, engine_class(name)))


def test_a_reader_searches_fetches_and_describes_its_passages(built):
    engine, model, _ = built
    reader = engine.reader()
    dense = reader.dense(model.embed_query("the quay crane failed"), 5)
    assert len(dense) == 5 and [s for _, s in dense] == sorted((s for _, s in dense), reverse=True)
    stored = reader.fetch([i for i, _ in dense])
    assert stored[dense[0][0]].passage.doc_id == "quay-crane"
    first = stored[dense[0][0]]
    assert first.sentence_spans.shape[1] == 2 and len(first.sentence_vectors) == len(first.sentence_spans)
    assert np.allclose(np.linalg.norm(first.sentence_vectors, axis=1), 1, atol=1e-3)
    assert first.metadata.outlet == "Coast Herald"
    terms = Analyzer().query_terms("bridge toll bearings")
    keyword = reader.keyword(terms, 5)
    assert keyword and stored_doc(reader, keyword[0][0]) == "bridge-toll"
    weights = reader.term_weights(terms)
    assert set(weights) <= set(terms) and all(w > 0 for w in weights.values())
    ids = [i for i, _ in dense]
    numbers = reader.documents_of(ids)
    assert set(numbers) == set(ids) and len(set(numbers.values())) == 3
    assert reader.signatures(ids).shape[0] == len(ids)
    held = reader.pieces(ids)  # late interaction: each passage's own word pieces, 8 bits a number
    assert set(held) == set(ids) and all(h.dtype == np.int8 and h.shape[1] == PIECE_DIMENSION and len(h) for h in
                                         held.values())
    assert len(held[dense[0][0]]) == len(words(stored[dense[0][0]].passage.text))  # the stand-in's pieces: words
    assert reader.pieces([]) == {}
    published = dict(zip(ids, reader.published(ids).tolist()))
    described = reader.describe(ids)
    for i in ids:
        doc_id = stored[i].passage.doc_id
        assert (published[i] == time_bound("2026-03-02T08:00:00Z", False)) == (doc_id == "quay-crane")
        assert described[i][0] == numbers[i] and described[i][1].outlet in ("Coast Herald", "Daily Ledger")


def test_word_pieces_made_another_way_are_never_read_as_these(built, monkeypatch):
    """An index records how its pieces were made (indexer/model/pieces.py: PIECES_FORMAT); when
    the code makes them another way, a reader leaves them out (no late interaction) and a build
    does not reuse them (it embeds those passages again), whatever the engine."""
    from indexer.model import pieces

    engine, model, root = built
    keys = chunk(StoredDocument(STORIES[0], "input", ""), model)[4]
    assert engine.reader().pieces(engine.reader().dense(model.embed_query("crane"), 3)[0][:1])
    monkeypatch.setattr(pieces, "PIECES_FORMAT", "orthogonal-96-seed7-int8x100")
    engine.close()
    again = open_engine(root, model.name, model.dimension)  # as a process running the changed code would
    reader = again.reader()
    ids = [i for i, _ in reader.dense(model.embed_query("the quay crane failed"), 5)]
    assert ids and reader.pieces(ids) == {}
    assert all(held[2] is None for held in again.writer().embedded(keys).values())
    again.close()


def test_a_selection_narrows_both_lists(built):
    engine, model, _ = built
    reader = engine.reader()
    selection = reader.select(Filters(outlets=("daily ledger",)))
    vector, terms = model.embed_query("harbour crane toll"), Analyzer().query_terms("harbour crane toll")
    for found in (reader.dense(vector, 10, selection), reader.keyword(terms, 10, selection)):
        assert found and {stored_doc(reader, i) for i, _ in found} == {"bridge-toll"}
    dated = reader.select(Filters(published_after=time_bound("2026-04-01", False)))
    assert {stored_doc(reader, i) for i, _ in reader.dense(vector, 10, dated)} == {"bridge-toll"}
    assert {stored_doc(reader, i) for i, _ in reader.dense(vector, 10, dated, exact=True)} == {"bridge-toll"}


def test_documents_are_kept_whole_and_listed_a_page_at_a_time(built):
    engine, _, _ = built
    reader = engine.reader()
    kept = reader.document("bridge-toll")
    assert kept.document.text == STORIES[1].text and kept.origin == "folder" and len(kept.passages) == 2
    assert reader.document("no-such-story") is None
    total, page = reader.document_ids(1, 1)
    assert total == 3 and [row[0] for row in page] == ["choir-tour"]


def test_the_writer_reuses_vectors_and_applies_a_change_as_one_new_snapshot(built):
    engine, model, root = built
    before = engine.reader()
    writer = engine.writer()
    live = writer.live_documents()
    assert set(live) == {"quay-crane", "bridge-toll", "choir-tour"} and live["choir-tour"].origin == "folder"
    keys = chunk(StoredDocument(STORIES[2], "input", ""), model)[4]  # what the model saw for its passage
    reused = writer.embedded(keys)
    assert set(reused) == set(keys) and np.asarray(reused[keys[0]][0]).shape == (model.dimension,)
    assert reused[keys[0]][2].dtype == np.int8 and len(reused[keys[0]][2])  # its word pieces
    note = Document("ferry-note", "Ferry Note", "api:ferry-note", "Ferry Note\nThe night ferry is cancelled "
                    "tonight because of fog in the harbour.")
    generation, _ = update_documents(root, model, [note], ["choir-tour"], engine=engine, deletable=None)
    assert engine.current() == generation != before.generation
    assert {d.doc_id for d in engine.writer().ingested_documents()} == {"ferry-note"}
    after = engine.reader()
    assert after.document("choir-tour") is None and after.document("ferry-note").origin == "api"
    assert before.document("choir-tour") is not None  # an open snapshot keeps serving what it served
    engine.release(after)

    def failing():
        yield from ()
        raise OSError("disk full")

    with pytest.raises(OSError):
        engine.writer().apply(ChangeSet(upserts=failing(), deletes=["quay-crane"]))
    assert engine.current() == generation and engine.reader().document("quay-crane") is not None


def test_upkeep_inspection_and_a_repair_of_an_intact_index_keep_every_document(built):
    engine, model, _ = built
    engine.prepare()
    done = engine.maintain()
    assert isinstance(done, list) and all(isinstance(line, str) for line in done)
    damage = engine.inspect()
    assert damage.intact and damage.lost == () and damage.newer is None
    served = set(engine.writer().live_documents())
    engine.repairer(damage).apply(ChangeSet(chunker=engine.writer().health().chunker))
    assert set(engine.writer().live_documents()) == served
    engine.close()  # let go; the engine opens again when next used
    assert set(engine.reader().document_ids(0, 10)[1][i][0] for i in range(len(served))) == served


def stored_doc(reader, passage_id: int) -> str:
    return reader.fetch([passage_id])[passage_id].passage.doc_id


def test_every_method_of_the_seam_is_exercised_here():
    """Adding a method to the seam means adding it to this contract."""
    from pathlib import Path

    from indexer.index.engine import Engine, IndexReader, IndexWriter

    source = Path(__file__).read_text(encoding="utf-8")
    methods = {name for protocol in (Engine, IndexReader, IndexWriter) for name, value in vars(protocol).items()
               if not name.startswith("_") and callable(getattr(value, "__func__", value))}
    assert len(methods) > 20 and sorted(m for m in methods if f".{m}(" not in source) == []

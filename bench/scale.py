"""Scale benchmark: indexes of 10k to 1M passages from synthetic articles, built and served.

    .venv/bin/python bench/scale.py --dataset "$SCIFACT" --sizes 10000 100000 300000 1000000 \
        --json bench-results/scale.json
    .venv/bin/python bench/scale.py --dataset "$SCIFACT" --sizes 100000 --engine milvus --queries 100
    .venv/bin/python bench/scale.py --dataset "$SCIFACT" --sizes 100000 --engine milvus-server --queries 100

milvus-server: Milvus over gRPC, as replicas reach a cluster (a `milvus-lite server` started for
the run; its memory is reported beside the service's).

Articles are real SciFact sentences recombined (3-4 per paragraph, 10 paragraphs per article:
one passage per paragraph; each article keeps to one of 200 topics, --topics), built at the
stand-in encoder's speed, so a million passages build in minutes. Their vectors (--vectors):
"model" (default), the real model's vector of the SciFact document a passage's first sentence
comes from plus small noise, with the index recording the real model, so the server embeds the
questions and ingested articles with it (ModelDistributionEncoder); "hashing", the stand-in's
feature-hashing vectors for everything (SEMSEARCH_MODEL_PATH=hashing).
For each size: build seconds (and the embedding share), segments, size on disk, serving RSS,
hybrid HTTP p50/p99 with 1 client and req/s with 4, dense recall@10 against exact=true, one
POST /documents of a 1,000-word article and one delete, and merge times. The real model's
embedding speed is bench/index_speed.py; the approximate index alone on SciFact's own vectors
is bench/ann.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from bench.serving import http_phase, peak_rss_mb  # noqa: E402
from indexer.engines.faiss import store  # noqa: E402
from indexer.eval.beir import read_corpus, read_queries  # noqa: E402
from indexer.index.build import build_from_documents  # noqa: E402
from indexer.text.chunking import sentence_spans  # noqa: E402
from indexer.text.documents import Document  # noqa: E402
from indexer.text.metadata import Metadata  # noqa: E402
from indexer.index.engine import open_engine  # noqa: E402
from indexer.model.hashing_encoder import HashingEncoder  # noqa: E402
from indexer.engines.faiss.merge import merge_all  # noqa: E402
from indexer.engines.faiss.writer import SegmentStore  # noqa: E402

from tests.conftest import milvus_server, start_server, stop_server  # noqa: E402

ENGINE_OF: dict[str, tuple[str, dict]] = {}  # --engine -> (engine, its options): milvus-server's URI
MILVUS_SERVER: list = []  # (process, uri) of the milvus-lite server started for --engine milvus-server

PARAGRAPHS = 10
KEY = "bench"
# Articles keep to one topic, as news does: 200 topics of SciFact abstracts. Articles of sentences
# drawn from the whole corpus (--topics 1) have no topical structure at all, the worst case for
# an approximate index (docs/benchmarks.md).
TOPICS = 200


class TimedEncoder(HashingEncoder):
    """The stand-in encoder, counting the seconds spent embedding."""

    seconds = 0.0

    def embed_passages(self, inputs, spans, progress=None):
        started = time.perf_counter()
        try:
            return super().embed_passages(inputs, spans, progress)
        finally:
            self.seconds += time.perf_counter() - started


class ModelDistributionEncoder(TimedEncoder):
    """Vectors of the real model's distribution at the stand-in's speed (--vectors model).

    A passage's vector is the real model's vector of the SciFact document its first known sentence
    comes from, plus Gaussian noise (sigma 0.02 a coordinate, as bench/ann.py: cosine about 0.94 to
    the original); its sentence vectors are the passage's. The index records the real model, so
    the server embeds every query and ingested article with it: the dense list is searched with
    real questions in the geometry the approximate index meets in a real archive, which the
    stand-in's bag-of-words vectors do not have (docs/benchmarks.md). Chunking is the stand-in's
    (words for word pieces), which cuts these 3-4 sentence paragraphs the same way."""

    def __init__(self, name: str, documents: np.ndarray, owner: dict[str, int], sigma: float = 0.02,
                 seed: int = 0) -> None:
        super().__init__()
        self.name, self.documents, self.owner, self.sigma = name, documents, owner, sigma
        self.rng = np.random.default_rng(seed)

    def base(self, text: str, spans) -> int:
        for start, end in spans:
            found = self.owner.get(text[start:end].strip())
            if found is not None:
                return found
        return zlib.crc32(text.encode()) % len(self.documents)

    def embed_passages(self, inputs, spans, progress=None):
        started = time.perf_counter()
        try:
            rows = np.fromiter((self.base(t, s) for t, s in zip(inputs, spans)), np.int64, len(inputs))
            passages = self.documents[rows] + self.rng.normal(0, self.sigma, (len(rows), self.dimension)).astype(np.float32)
            passages /= np.linalg.norm(passages, axis=1, keepdims=True)
            return passages, np.repeat(passages, [len(s) for s in spans], axis=0)
        finally:
            self.seconds += time.perf_counter() - started


def model_document_vectors(dataset: Path, workdir: Path) -> tuple[str, np.ndarray, dict[str, int]]:
    """The real model's name, its vector of each dataset document (title and text, embedded once and
    kept in workdir) and each sentence's document."""
    from indexer.model.embedding import default_precision, light_model_for

    documents = list(read_corpus(dataset))
    model = light_model_for(precision=default_precision())
    saved = workdir / f"document-vectors-{zlib.crc32(model.name.encode()):08x}.npy"
    if saved.is_file():
        vectors = np.load(saved)
    else:
        started = time.perf_counter()
        vectors = model.embed([f"{d.title} {d.text}" for d in documents]).astype(np.float32)
        np.save(saved, vectors)
        print(f"embedded {len(documents)} documents with {model.name} in {time.perf_counter() - started:.0f} s",
              flush=True)
    owner = {d.text[s:e].strip(): i for i, d in enumerate(documents) for s, e in sentence_spans(d.text)}
    return model.name, vectors, owner


@dataclass
class Sentences:
    """Real sentences to recombine, in pools: one pool per topic, or a single pool."""

    pools: list[list[str]]
    titles: list[list[str]]

    @property
    def all(self) -> list[str]:
        return [sentence for pool in self.pools for sentence in pool]


def corpus_sentences(dataset: Path, topics: int = TOPICS) -> Sentences:
    """The dataset's sentences, pooled by topic: its documents clustered (spherical k-means on the
    stand-in's vectors of title and text, fixed seed) into `topics` groups. topics=1: one pool."""
    documents = list(read_corpus(dataset))
    assignment = np.zeros(len(documents), dtype=np.int64)
    if topics > 1:
        import faiss

        vectors = HashingEncoder().embed([f"{d.title} {d.text}" for d in documents]).astype(np.float32)
        kmeans = faiss.Kmeans(vectors.shape[1], topics, niter=20, seed=1, spherical=True, verbose=False)
        kmeans.cp.min_points_per_centroid = 1  # few documents per topic is what is wanted here
        kmeans.train(vectors)
        assignment = kmeans.index.search(vectors, 1)[1][:, 0]
    pools: list[list[str]] = [[] for _ in range(topics)]
    titles: list[list[str]] = [[] for _ in range(topics)]
    for document, topic in zip(documents, assignment.tolist()):
        pools[topic] += [document.text[s:e] for s, e in sentence_spans(document.text)]
        titles[topic].append(document.title)
    kept = [i for i, pool in enumerate(pools) if pool]
    return Sentences([pools[i] for i in kept], [titles[i] for i in kept])


EPOCH = 1_577_836_800  # 2020-01-01T00:00:00Z: article n is published 10 n minutes later


def article(n: int, rng: np.random.Generator, sentences: Sentences, paragraphs: int = PARAGRAPHS) -> Document:
    """An article on one topic: paragraphs of 3-4 sentences drawn from that topic's pool."""
    topic = int(rng.integers(len(sentences.pools)))
    pool, titles = sentences.pools[topic], sentences.titles[topic]
    body = "\n".join(" ".join(pool[i] for i in rng.integers(0, len(pool), rng.integers(3, 5)))
                     for _ in range(paragraphs))
    published = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH + 600 * n))  # ten minutes apart
    return Document(f"a{n}", titles[n % len(titles)], f"https://news.example/{n % 97}/{n}", body,
                    Metadata(published_at=published))


def long_article(n: int, rng: np.random.Generator, sentences: list[str], words: int = 1000) -> dict:
    """An ingest body of about `words` words, in paragraphs of 4 sentences."""
    picked, count = [], 0
    while count < words:
        picked.append(sentences[int(rng.integers(0, len(sentences)))])
        count += len(picked[-1].split())
    text = "\n".join(" ".join(picked[i:i + 4]) for i in range(0, len(picked), 4))
    return {"id": f"ingest-{n}", "title": f"Ingested report {n}", "text": text}


def disk_mb(folder: Path) -> float:
    """Size of what the current generation uses (older generations' segments are kept a while);
    for another engine, the whole folder (Milvus Lite's file is in it)."""
    manifest = store.read_manifest(folder)
    if manifest is None:
        return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 1)
    parts = [folder / store.current_generation(folder)] + [folder / store.SEGMENTS / s["name"]
                                                           for s in manifest["segments"]]
    return round(sum(p.stat().st_size for part in parts for p in part.rglob("*") if p.is_file()) / 2**20, 1)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def dense_recall(url: str, queries: list[str]) -> float:
    """Mean overlap of the dense top 10 with and without exact=true."""
    overlaps = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for q in queries:
            lists = [[r["passage_id"] for r in client.get("/search", params={
                "q": q, "k": 10, "mode": "dense", "exact": exact}).json()["results"]] for exact in ("true", "false")]
            overlaps.append(len(set(lists[0]) & set(lists[1])) / max(len(lists[0]), 1))
    return round(float(np.mean(overlaps)), 4)


def ingest_and_delete(url: str, bodies: list[dict]) -> dict:
    """Median seconds of one POST /documents (checked searchable right after) and one DELETE."""
    posts, deletes = [], []
    with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for body in bodies:
            started = time.perf_counter()
            answer = client.post("/documents", json={"documents": [body]})
            posts.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
            found = client.get("/search", params={"q": body["text"][:200], "k": 3, "doc_id": body["id"]}).json()
            assert found["results"], "an ingested document was not searchable when the call returned"
        for body in bodies:
            started = time.perf_counter()
            assert client.delete(f"/documents/{body['id']}").status_code == 200
            deletes.append(time.perf_counter() - started)
    return {"post_s": round(statistics.median(posts), 3), "delete_s": round(statistics.median(deletes), 3),
            "post_all_s": [round(x, 3) for x in posts], "delete_all_s": [round(x, 3) for x in deletes]}


def background_merges(log_path: str) -> list[float]:
    return [float(s) for s in re.findall(r"merged \d+ segments \(\d+ live passages\) in ([\d.]+)s",
                                          Path(log_path).read_text())]


def build(size: int, index: Path, sentences: Sentences, rng: np.random.Generator, encoder: TimedEncoder,
          kind: str = "faiss") -> dict:
    """Build (and merge, as `semsearch index` does) an index of about size passages."""
    documents = [article(n, rng, sentences) for n in range(max(1, size // PARAGRAPHS))]
    shutil.rmtree(index, ignore_errors=True)
    encoder.seconds = 0.0
    started = time.perf_counter()
    engine_kind, options = ENGINE_OF.get(kind, (kind, {}))
    engine = open_engine(index, encoder.name, encoder.dimension, engine_kind, **options)
    summary = build_from_documents(documents, index, encoder, progress=False, engine=engine)
    build_seconds = time.perf_counter() - started
    del documents
    merge_started = time.perf_counter()
    merges = merge_all(SegmentStore(index, encoder.name, encoder.dimension)) if kind == "faiss" else []
    engine.close()  # Milvus Lite: the server opens it next
    return {"engine": kind, "passages": summary.passages, "documents": summary.documents,
            "topics": len(sentences.pools),
            "vectors": encoder.name,
            "build_s": round(build_seconds, 1), "embedding_s": round(encoder.seconds, 1),
            "build_without_embedding_s": round(build_seconds - encoder.seconds, 1),
            "stand_in_passages_per_s": round(summary.passages / max(encoder.seconds, 1e-9)),
            "post_build_merges": [{"segments": len(m.sources), "passages": m.rows, "seconds": round(m.seconds, 1)}
                                  for m in merges],
            "post_build_merge_s": round(time.perf_counter() - merge_started, 1)}


def ensure_built(size: int, workdir: Path, sentences: Sentences, reuse: bool, encoder: TimedEncoder,
                 seed: int = 0, kind: str = "faiss") -> tuple[Path, dict, np.random.Generator]:
    """The index of this size in workdir (built now, or kept from an earlier run when reuse), its
    build figures (saved beside it) and a generator for the articles measure ingests."""
    rng = np.random.default_rng(seed)
    index = workdir / f"index-{kind}-{size}"
    built = workdir / f"index-{kind}-{size}.json"
    if reuse and built.is_file():
        report = json.loads(built.read_text())
        if report.get("topics", 1) != len(sentences.pools):
            raise SystemExit(f"{index} was built from {report.get('topics', 1)} topics, not "
                             f"{len(sentences.pools)}: pass the same --topics, or build it again")
        if report.get("vectors", HashingEncoder.name) != encoder.name:
            raise SystemExit(f"{index} holds vectors of {report.get('vectors', HashingEncoder.name)}, not "
                             f"{encoder.name}: pass the same --vectors, or build it again")
        rng = np.random.default_rng(seed + 1)
    else:
        report = build(size, index, sentences, rng, encoder, kind)
    report["disk_mb"] = disk_mb(index)
    built.write_text(json.dumps(report))
    print(size, "built", report, flush=True)
    return index, report, rng


def measure(size: int, workdir: Path, sentences: Sentences, queries: list[str], encoder: TimedEncoder,
            reuse: bool = False, kind: str = "faiss", n: int = 1000) -> dict:
    """Serve the index and measure it; n: queries with 1 client (twice as many with 4)."""
    index, report, rng = ensure_built(size, workdir, sentences, reuse, encoder, kind=kind)
    # The server runs the model the index records: the stand-in, or the real model (--vectors model).
    model = {"SEMSEARCH_MODEL_PATH": "hashing"} if encoder.name == HashingEncoder.name else {}
    process, url = start_server(index, {**model, "SEMSEARCH_API_KEY": KEY})
    try:
        http_phase(url, queries[:100], clients=1)  # warm up
        report["rss_after_warmup_mb"] = rss_mb(process.pid)
        report["segments"] = httpx.get(url + "/readyz").json()["segments"]
        report["baseline_healthz"] = http_phase(url, ["-"] * 200, clients=1, path="/healthz")
        report["hybrid_1_client"] = http_phase(url, queries[100:100 + n], clients=1)
        report["hybrid_4_clients"] = http_phase(url, queries[100 + n:100 + 3 * n], clients=4)
        report["dense_recall_at_10_vs_exact"] = dense_recall(url, queries[100 + 3 * n:200 + 3 * n])
        report["feed"] = feed_against_search(url, queries[200 + 3 * n:200 + 4 * n])
        bodies = [long_article(n, rng, sentences.all) for n in range(5)]
        report["ingest_1000_words"] = ingest_and_delete(url, bodies)
        time.sleep(3)  # let the background merger settle after the writes
        report["background_merges_s"] = background_merges(process.log_path)
        report["rss_mb"] = rss_mb(process.pid)
        if MILVUS_SERVER:
            report["milvus_server_rss_mb"], report["milvus_server_peak_rss_mb"] = (rss_mb(MILVUS_SERVER[0].pid),
                                                                                  peak_rss_mb(MILVUS_SERVER[0].pid))
        report["peak_rss_mb"] = peak_rss_mb(process.pid)
    finally:
        stop_server(process)
    print(size, "served", {k: v for k, v in report.items() if k not in ("post_build_merges",)}, flush=True)
    return report


def feed_against_search(url: str, queries: list[str]) -> dict:
    """GET /search.atom (50 entries) against GET /search (k 10) of the same queries, both with
    min_relevance 0 (so that every feed has 50 entries), 1 client, in three phases on two halves
    of the queries: each asked for the first time (search on one half, feed on the other: each
    pays for embedding its query); each asked as the other (the query's vector is cached: what
    differs is the feed's own work); and the feeds asked for again (a feed reader's poll, answered
    from the service's feed cache until the index changes)."""
    half, every = len(queries) // 2, {"min_relevance": 0}
    feed = {"k": 50, **every}
    one, other = queries[:half], queries[half:]

    def phase(searched: list[str], fed: list[str]) -> dict:
        return {"search_k10": http_phase(url, searched, clients=1, params=every),
                "feed_50": http_phase(url, fed, clients=1, path="/search.atom", params=feed)}

    first, cached = phase(one, other), phase(other, one)
    entries = [httpx.get(url + "/search.atom", params={"q": q, **feed}).text.count("<entry>") for q in one[:20]]
    return {"first_ask": first, "query_vector_cached": cached,
            "feed_asked_again": http_phase(url, one, clients=1, path="/search.atom", params=feed),
            "feed_entries_median": statistics.median(entries)}


def encoder_speed(sentences: Sentences, repeats: int = 5) -> dict:
    """The stand-in encoder alone on 6,000 synthetic passages: the first (cold) pass and the median
    of the rest, passages a second (its word cache makes a warm encoder faster)."""
    from indexer.index.build import chunk
    from indexer.text.documents import StoredDocument

    rng = np.random.default_rng(7)
    encoder = HashingEncoder()
    jobs = [chunk(StoredDocument(article(n, rng, sentences), "folder", ""), encoder) for n in range(600)]
    inputs = [text for job in jobs for text in job[2]]
    spans = [found for job in jobs for found in job[3]]
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        encoder.embed_passages(inputs, spans)
        rates.append(len(inputs) / (time.perf_counter() - started))
    return {"passages": len(inputs), "cold_per_s": round(rates[0]), "warm_per_s": round(statistics.median(rates[1:]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR folder whose sentences are recombined")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, help="where the indexes go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the indexes")
    parser.add_argument("--reuse", action="store_true", help="serve indexes an earlier --keep run left in --workdir (and keep them)")
    parser.add_argument("--build-only", action="store_true", help="build (and keep) the indexes, serve nothing")
    parser.add_argument("--topics", type=int, default=TOPICS,
                        help=f"topics the articles keep to (default {TOPICS}; 1: sentences from anywhere)")
    parser.add_argument("--vectors", choices=["model", "hashing"], default="model",
                        help="model (default): passage vectors of the real model's distribution, queries and "
                             "ingests embedded by the real model; hashing: the stand-in encoder's for everything")
    parser.add_argument("--engine", choices=("faiss", "milvus", "milvus-server"), default="faiss",
                        help="index engine (milvus: Lite in the index folder; milvus-server: over gRPC)")
    parser.add_argument("--queries", type=int, default=1000, help="HTTP queries with 1 client (twice as many with 4)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    sentences = corpus_sentences(args.dataset, args.topics)
    queries = list(read_queries(args.dataset).values())
    queries = (queries * (1 + 3200 // len(queries)))[:3200]  # 1,109 questions in a cycle: the server's 1,024 cached query vectors never hit
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="semsearch-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    encoder = (ModelDistributionEncoder(*model_document_vectors(args.dataset, workdir)) if args.vectors == "model"
               else TimedEncoder())
    results: dict = {"stand_in_encoder": encoder_speed(sentences), "topics": len(sentences.pools), "sizes": {}}
    print("stand-in encoder", results["stand_in_encoder"], flush=True)
    with contextlib.ExitStack() as stack:
        if args.engine == "milvus-server":
            MILVUS_SERVER[:] = stack.enter_context(milvus_server(workdir / "milvus-server"))
            ENGINE_OF["milvus-server"] = ("milvus", {"uri": MILVUS_SERVER[1]})
        run(args, workdir, sentences, queries, encoder, results)
    print(json.dumps(results, indent=2))


def run(args, workdir: Path, sentences, queries: list[str], encoder, results: dict) -> None:
    try:
        for size in args.sizes:
            if args.build_only:
                ensure_built(size, workdir, sentences, False, encoder, kind=args.engine)
                continue
            results["sizes"][size] = measure(size, workdir, sentences, queries, encoder, args.reuse, args.engine,
                                             args.queries)
            if not (args.keep or args.reuse):  # an index kept for reuse stays for the next run too
                shutil.rmtree(workdir / f"index-{args.engine}-{size}", ignore_errors=True)
    finally:
        write_report(results, args.json)  # what was measured, even when a later size failed
        if not (args.keep or args.build_only) and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

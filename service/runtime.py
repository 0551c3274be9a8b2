"""What the service has loaded (model, searcher) and how it follows new index generations."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from indexer.model.cpu import TABLE, UnknownClass, native, query_p50_ms, read_cpu
from indexer.model.embedding import Embedder, ModelError, TextModel, choose_precision, light_model_for
from indexer.index.engine import Engine, IndexUnavailable, built_with, open_engine
from indexer.index.progress import count
from indexer.search.relevance import CALIBRATION, RelevanceParams, not_fitted_notice, relevance_for
from indexer.search.searcher import FusionParams, Searcher
from indexer.settings import Settings
from service.errors import ServiceUnavailable

log = logging.getLogger("semsearch.service")


@dataclass
class Runtime:
    """A searcher, or the reason there is none; swapped whole, so a request never sees a mix."""

    settings: Settings
    encoder: TextModel | None = None  # the model: queries, and builds for ingest
    embedder: TextModel | None = None  # the same model, set only when ingest is enabled
    searcher: Searcher | None = None
    problem: ServiceUnavailable | None = None
    outage: ServiceUnavailable | None = None  # the engine stopped answering while an index was served
    unreached: bool = False  # the engine could not be reached at start: the watcher tries again
    failed_generation: str | None = None
    reload_lock: threading.Lock = field(default_factory=threading.Lock)
    engine: Engine | None = None  # the index; shared by searches, ingests and merges (set with the model)
    merge_wanted: threading.Event = field(default_factory=threading.Event)
    arithmetic: dict | None = None  # the precision on this CPU: native or emulated, measured (for /readyz)
    feeds: dict | None = None  # with SEMSEARCH_FEEDS: what the follower has done (for /readyz and /metrics)
    calibration: tuple | None = None  # the index folder's calibration file as last read (mtime, size)

    @classmethod
    def start(cls, settings: Settings) -> "Runtime":
        """Load the model and the current index; failures are kept for /readyz and /search.

        The model runs without torch whenever its recipe is cached (about 0.9 s and 450 MB with a
        SciFact index, against 4.4 s and 850 MB with torch loaded), for search and ingest alike.
        """
        runtime = cls(settings=settings)
        runtime.open()
        return runtime

    def open(self) -> None:
        """Load the model for the index's precision and open the engine, then the index. An engine
        that cannot be reached (Milvus down) is tried again by the watcher (reachable)."""
        runtime, settings = self, self.settings
        try:
            options = settings.engine_options()
            precision = choose_precision(settings.precision, built_with(settings.index_dir, settings.engine,
                                                                        **options))
            if settings.backend == "onnx" or settings.model_path == "hashing":
                runtime.encoder = light_model_for(settings.model_path, settings.model_threads, settings.model_spin,
                                                  precision, shared=True)
            elif precision != "fp32":
                raise ModelError(f"the torch backend runs fp32 only, and the index (or SEMSEARCH_PRECISION) asks for "
                                 f"{precision}", "unset SEMSEARCH_BACKEND  # onnx, the default, runs every precision")
            else:
                runtime.encoder = Embedder(settings.model_path, backend=settings.backend,
                                           threads=settings.model_threads, spin=settings.model_spin)
            runtime.embedder = runtime.encoder if settings.ingest_enabled else None
            runtime.arithmetic = arithmetic(precision, runtime.encoder)
            runtime.engine = open_engine(settings.index_dir, runtime.encoder.name, runtime.encoder.dimension,
                                         settings.engine, **options)
        except IndexUnavailable as exc:
            runtime.unreached = True
            if runtime.problem is None or runtime.problem.message != exc.message:
                log.error("not ready: %s (fix: %s); trying again", exc.message, exc.fix)
            runtime.problem = ServiceUnavailable(exc.message, exc.fix)
            return
        except (ModelError, UnknownClass, ValueError) as exc:
            runtime.problem = ServiceUnavailable(str(exc), getattr(exc, "fix", "unset SEMSEARCH_CPU_CLASS"
                                                 if isinstance(exc, UnknownClass) else "see the message"))
            log.error("not ready: %s", exc)
            return
        runtime.unreached = False
        runtime.reload()

    @property
    def generation(self) -> str | None:
        return self.searcher.index.generation if self.searcher else None

    def reload(self) -> str | None:
        """Switch to the generation the pointer names if it is not the one in use; returns it."""
        if self.engine is None:
            return None
        self.engine.prepare()  # the slow opening, before the lock an ingest may be waiting for
        with self.reload_lock:
            try:
                wanted = self.engine.current()
            except IndexUnavailable as exc:  # the engine is down (Milvus): say so until it is back
                if self.outage is None:
                    log.error("index engine unreachable: %s (fix: %s)", exc.message, exc.fix)
                self.outage = ServiceUnavailable(exc.message, exc.fix)
                return self.generation
            if self.outage is not None:
                log.info("index engine reachable again")
                self.outage = None
            if self.searcher is not None and self.calibration != self.calibration_stamp():
                self.searcher = self.searcher_for(self.searcher.index)  # `semsearch calibrate` refitted it
            if wanted is not None and wanted in (self.generation, self.failed_generation):
                return self.generation  # generations never change once written: no need to retry
            try:
                index = self.engine.reader()
            except IndexUnavailable as exc:
                if self.searcher is None:
                    if self.problem is None or self.problem.message != exc.message:  # say it once
                        log.error("not ready: %s (fix: %s)", exc.message, exc.fix)
                    self.problem = ServiceUnavailable(exc.message, exc.fix)
                elif wanted != self.failed_generation:  # keep answering from the generation in use
                    log.error("cannot switch to generation %s, still serving %s: %s (fix: %s)",
                              wanted, self.generation, exc.message, exc.fix)
                self.failed_generation = wanted
                return self.generation
            self.searcher = self.searcher_for(index)
            self.problem = None
            self.engine.release(index)
            info = index.info
            held = count(info.passages, "passage") + (f" in {count(info.segments, 'segment')}"
                                                      if info.segments is not None else "")  # Milvus keeps none
            log.info("serving index generation %s (%s)", index.generation, held)
            return index.generation

    def calibration_stamp(self) -> tuple | None:
        try:
            found = (self.settings.index_dir / CALIBRATION).stat()
        except OSError:
            return None
        return found.st_mtime_ns, found.st_size

    def searcher_for(self, index) -> Searcher:
        """A searcher of the index with the relevance weights for the model (the index folder's
        calibration, else the shipped ones); says in the log when they are not fitted."""
        previous = self.searcher.relevance if self.searcher is not None else None
        self.calibration = self.calibration_stamp()
        relevance, warning = relevance_for(self.encoder.name, self.settings.index_dir)
        if warning:
            log.warning("%s", warning)
        if previous is None or previous != relevance:
            if relevance.fitted:
                log.info("relevance weights: %s", "shipped for the model" if relevance.fitted == "packaged"
                         else relevance.fitted)
            else:
                log.warning("%s", not_fitted_notice(self.encoder.name))
        return Searcher(index, self.encoder, FusionParams.of(self.settings), relevance)

    def relevance_state(self) -> dict | None:
        """For /readyz: whether the relevance is fitted for the model, and by what."""
        if self.searcher is None:
            return None
        relevance: RelevanceParams = self.searcher.relevance
        return {"fitted": relevance.fitted is not None, "weights": relevance.fitted, "floor": self.searcher.floor,
                **({} if relevance.fitted else {"notice": not_fitted_notice(self.encoder.name)})}


def arithmetic(precision: str, encoder: TextModel) -> dict:
    """The model's precision on this CPU, logged at start and shown in /readyz: whether it runs on
    the CPU's own instructions or is emulated (an index keeps its precision wherever it is served),
    and the query embedding time measured here."""
    cpu = read_cpu()
    found = {"precision": precision, "cpu": cpu.name, "cpu_class": cpu.cpu_class, "native": native(precision, cpu),
             "query_embedding_ms": query_p50_ms(encoder.embed_query),
             "new_index_precision": TABLE[cpu.cpu_class].precision}
    log.info("CPU %s; model precision %s runs %s here, query embedding p50 %.1f ms", cpu.describe(), precision,
             "natively" if found["native"] else "emulated", found["query_embedding_ms"])
    if not found["native"]:
        log.warning("precision %s is emulated on this CPU (the index keeps the precision it was built with): "
                    "correct, but slower; an index built here would use %s (`semsearch doctor` says why; "
                    "`semsearch index FOLDER --precision %s` re-embeds it)", precision,
                    found["new_index_precision"], found["new_index_precision"])
    return found


def watch(runtime: Runtime, stop: threading.Event) -> threading.Thread:
    """Poll the index pointer and reload when a build publishes a new generation."""
    interval = runtime.settings.reload_interval

    def loop() -> None:
        while not stop.wait(interval):
            try:
                if runtime.engine is None and runtime.unreached:
                    runtime.open()
                runtime.reload()
            except Exception:  # the watcher must outlive any one bad generation
                log.exception("index reload failed")

    thread = threading.Thread(target=loop, name="index-watcher", daemon=True)
    if interval > 0:
        thread.start()
    return thread


def merger(runtime: Runtime, stop: threading.Event) -> threading.Thread:
    """Run the engine's upkeep (merging small segments) in the background whenever an ingest asks
    for it (merge_wanted).

    FAISS merges write without the build lock and publish in a moment with it, so searches and
    ingests never wait for one; a failed merge leaves the generation in use untouched.
    """

    def loop() -> None:
        while not stop.is_set():
            if not runtime.merge_wanted.wait(timeout=1.0):
                continue
            runtime.merge_wanted.clear()
            try:
                if runtime.engine.maintain():
                    runtime.reload()
            except Exception:  # the merger must outlive any one failed merge
                log.exception("segment merge failed; the index in use is unchanged")

    thread = threading.Thread(target=loop, name="segment-merger", daemon=True)
    if runtime.embedder is not None and runtime.settings.merge:
        thread.start()
    return thread


def follower(runtime: Runtime, stop: threading.Event) -> threading.Thread:
    """With SEMSEARCH_FEEDS: poll the feeds now and every SEMSEARCH_FEED_INTERVAL seconds, index
    what changed through the same all-or-nothing path as POST /documents, and keep the figures.
    The feed list is configuration: no request can make the service fetch an address."""
    from datetime import datetime, timezone

    from indexer.index.build import update_documents
    from indexer.feeds.follow import poll
    from indexer.feeds.fetcher import FeedLimits

    settings = runtime.settings
    runtime.feeds = {"followed": len(settings.feed_urls), "polls": 0, "last_poll": None, "last_poll_unix": None,
                     "items_fetched": 0, "documents_changed": 0, "failures": 0, "refusals": 0, "last_failures": [],
                     "last_failed_feeds": [], "problem": None}
    try:
        limits = FeedLimits.of(settings)
    except ValueError as exc:  # a bad SEMSEARCH_FEED_HOSTS: said once, and nothing is fetched
        log.error("feeds not followed: %s", exc)
        runtime.feeds["problem"] = str(exc)
        limits = None

    def apply(documents) -> None:
        update_documents(settings.index_dir, runtime.encoder, documents, [], runtime.engine)
        runtime.reload()
        runtime.merge_wanted.set()

    def live_hashes(doc_ids):
        if runtime.engine.current() is None:
            return {}
        return {i: d.content_hash for i, d in runtime.engine.writer().live_documents(doc_ids).items()}

    def loop() -> None:
        while not stop.is_set():
            try:
                report = poll(settings.feed_urls, settings.index_dir, apply, limits, live_hashes, stop)
                status = runtime.feeds
                status.update(polls=status["polls"] + 1, items_fetched=status["items_fetched"] + report.fetched,
                              documents_changed=status["documents_changed"] + len(report.changed),
                              failures=status["failures"] + len(report.failures),
                              refusals=status["refusals"] + report.refusals, last_failures=report.failures[:10],
                              last_failed_feeds=report.failed_feeds[:10],
                              last_poll=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                              last_poll_unix=round(time.time(), 3))
                log.info("feeds polled: %d fetched, %d added or changed, %d failed", report.fetched,
                         len(report.changed), len(report.failures))
            except Exception:  # the follower must outlive any one bad poll
                log.exception("feed poll failed; tried again at the next one")
            stop.wait(settings.feed_interval)

    thread = threading.Thread(target=loop, name="feed-follower", daemon=True)
    if settings.feed_urls and runtime.encoder is not None and limits is not None:
        thread.start()
    return thread

"""What each `semsearch` command does (indexer/cli/main.py parses the arguments and reports errors)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

from indexer.errors import MAX_K, MOST_ENTRIES, DocumentError, IndexDamaged, QueryError, fix_command
from indexer.index.progress import count
from indexer.settings import current


def folder_name(path: str | Path) -> str:
    """A folder as a message names it: with a trailing slash ("index/"), so "the index in index/"
    never reads as "the index index"."""
    return str(path).rstrip("/") + "/"


def run_index(args: argparse.Namespace) -> int:
    from indexer.index.build import build_index, check, chunker_fingerprint
    from indexer.text.documents import holds_articles, read_folder
    from indexer.index.engine import IndexUnavailable

    seeds, out = Path(args.folder), Path(args.out)
    elsewhere = fix_command("index", seeds, "--out", out.absolute().with_name(f"{out.absolute().name}-index"))
    if out.exists() and not out.is_dir():
        raise IndexUnavailable(f"{out} is a file; an index is a folder", elsewhere)
    if holds_articles(out) and not any((out / name).exists() for name in ("engine.json", "CURRENT", "milvus.db")):
        raise IndexUnavailable(f"{out} holds articles, not an index: an index needs a folder of its own", elsewhere)
    model = model_for_index(args.model, args.precision, out)
    folder = list(read_folder(seeds))
    engine = engine_here(out, model)
    damage = engine.inspect()
    if args.check and not damage.intact:
        raise IndexDamaged("; ".join(damage.problems), fix_command("repair", out))
    if not damage.intact:  # mend first: the reindex below then restores folder documents lost with it
        print_repair(out, model, engine, args.accept_loss)
    changes = check(out, model.name, model.dimension, folder, engine)
    if args.check:
        warn_of_damaged_cache(out)
        if damage.newer is not None:
            print(f"semsearch: warning: {damage.rolled_back(engine.current())}", file=sys.stderr)
        if not changes.stale:
            print(f"the index in {folder_name(args.out)} is up to date with {folder_name(args.folder)} "
                  f"({count(changes.unchanged, 'document')})")
            return 0
        for label, ids in (("added", changes.added), ("changed", changes.changed), ("removed", changes.removed)):
            if ids:
                print(f"stale: {len(ids)} {label}: {', '.join(ids[:20])}{' …' if len(ids) > 20 else ''}")
        print(f"  fix: {fix_command('index', seeds, '--out', out)}", file=sys.stderr)
        return 1
    health = engine.writer().health()
    if not changes.stale and changes.unchanged and not args.force and health.chunker == chunker_fingerprint(model):
        passages = health.passages
        print(f"added 0, changed 0, removed 0, unchanged {changes.unchanged}; embedded 0 of {count(passages, 'passage')}")
        print(f"the index in {folder_name(args.out)} is already up to date: nothing written")
        return 0
    remote = ray_embedding(args, model) if args.ray is not None else None
    try:
        summary = build_index(out, model, folder, force=args.force, origin=str(seeds), engine=engine,
                              prune=args.prune, remote=remote)
    finally:
        if remote is not None:
            remote.close()
    for done in engine.maintain():
        print(done)
    c = summary.changes
    reused = summary.passages - summary.passages_embedded  # vectors kept from before or from the cache
    print(f"added {len(c.added)}, changed {len(c.changed)}, removed {len(c.removed)}, unchanged {c.unchanged}; "
          f"embedded {summary.passages_embedded} of {count(summary.passages, 'passage')}"
          f"{f' ({reused} reused)' if reused > 0 and summary.generation is not None else ''} in {summary.seconds:.1f}s")
    if summary.generation is None:
        print(f"the index in {folder_name(args.out)} is already up to date: nothing written")
    else:
        print(f"indexed {count(summary.documents, 'document')}, {count(summary.passages, 'passage')}, "
              f"{count(summary.sentences, 'sentence')} -> {summary.generation}")
    return 0


def ray_embedding(args: argparse.Namespace, model):
    """The Ray cluster's actors for `index --ray` (indexer/model/ray_embed.py; Ray is imported only here)."""
    from indexer.model.embedding import choose_precision
    from indexer.model.ray_embed import RayEmbedding

    if args.ray_actors is not None and args.ray_actors < 1:
        raise QueryError(f"--ray-actors must be 1 or more, not {args.ray_actors}")
    return RayEmbedding(model, args.model, choose_precision(None, model.name), args.ray, args.ray_actors)


def run_move(args: argparse.Namespace) -> int:
    """Move the index at args.index to the engine args.to, reusing its vectors."""
    from indexer.index.build import move_index
    from indexer.index.engine import engine_class, engine_kind

    root = Path(args.index)
    options = current().engine_options()
    model = model_for_index(args.model, None, root, own_engine=True)
    held_by = engine_kind(root, None, options.get("uri"))
    if held_by == args.to:
        raise QueryError(f"the index at {root} is already held by the {args.to} engine")
    source = engine_here(root, model, own_engine=True)  # the source is the index's own, the target --to
    target = engine_class(args.to)(root, model.name, model.dimension, **{k: v for k, v in options.items() if v})
    summary = move_index(root, model, source, target)
    print(f"moved {count(summary.documents, 'document')}, {count(summary.passages, 'passage')} from {held_by} to "
          f"{args.to} (embedded {summary.passages_embedded}) in {summary.seconds:.1f}s -> {summary.generation.name}")
    print(f"the {held_by} copy is left as it was; later commands on {root} use {args.to}")
    return 0


def run_repair(args: argparse.Namespace) -> int:
    from indexer.index.engine import mend_record

    index = Path(args.index)
    kind, options = engine_choice()
    mended = mend_record(index, kind, options["uri"])
    if mended is not None:
        print(f"mended {index / 'engine.json'}, which could not be read: it names the {mended} engine again, "
              "which holds the index in this folder")
    model = model_for_index(args.model, None, index)
    print_repair(index, model, engine_here(index, model), args.accept_loss)
    return 0


def run_doctor(args: argparse.Namespace) -> int:
    """Print the CPU class, the precision table's choice for it and why, and, for an existing index,
    whether its precision runs natively here, with query embedding measured for both."""
    from indexer.model.cpu import TABLE, UnknownClass, native, query_p50_ms, read_cpu
    from indexer.model.embedding import choose_precision, light_model_for
    from indexer.index.engine import built_with

    try:
        cpu = read_cpu()
    except UnknownClass as exc:
        raise QueryError(str(exc)) from exc
    choice = TABLE[cpu.cpu_class]
    print(f"CPU: {cpu.describe()}")
    fresh = light_model_for(args.model, precision=choice.precision)
    print(f"a new index is built at precision {choice.precision} (query embedding p50 "
          f"{query_p50_ms(fresh.embed_query):.1f} ms here): {choice.why}")
    kind, options = engine_choice()
    recorded = built_with(Path(args.index), kind, **options)
    if recorded is None:
        print(f"index {args.index}: none yet")
        print_cache()
        return 0
    precision = choose_precision(None, recorded)
    how = "runs natively here" if native(precision, cpu) else "is emulated here (correct, slower)"
    model = fresh if precision == choice.precision else light_model_for(args.model, precision=precision)
    print(f"index {args.index}: built with {recorded}; its precision {precision} {how}, query embedding p50 "
          f"{query_p50_ms(model.embed_query):.1f} ms")
    if precision != choice.precision:
        print(f"  to move it to {choice.precision}: semsearch index FOLDER --out {args.index} --precision "
              f"{choice.precision} (re-embeds every passage)")
    print_cache()
    return 0


def print_cache() -> None:
    """The model cache's size: one copy per model content, shared by every install."""
    from indexer.model.embedding import cache_root, cache_size

    size, entries = cache_size()
    print(f"model cache {cache_root()}: {size / 1e6:,.0f} MB in {count(entries, 'folder')} (each model's ONNX "
          f"export and its int8 models, shared by every install; copies no install uses are removed by themselves)")


def print_repair(index: Path, model, engine, accept_loss: bool) -> None:
    from indexer.index.repair import repair_index, report

    for line in report(repair_index(index, model, engine, accept_loss), index):
        print(line)


def ensure_port_free(host: str, port: int) -> None:
    """Fail before loading anything when another process already listens on host:port."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; stop the other "
                          f"server or choose another port with --port") from exc


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    ensure_port_free(args.host, args.port)

    from service.app import create_app
    from service.logs import log_config
    from service.protocol import HeadDeadlineProtocol

    settings = current().but(index_dir=Path(args.index), model_path=args.model, host=args.host, port=args.port)
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_config=log_config(settings.log_level), access_log=False,
                http=HeadDeadlineProtocol)
    return 0


# The search options by the API's names for them, as QueryError names a field.
FLAG_OF = {"q": "the query", "k": "-k", "min_relevance": "--min-relevance", "published_after": "--after",
           "published_before": "--before", "recency_half_life_days": "--recency-half-life"}


def run_search(args: argparse.Namespace) -> int:
    from indexer.cli.client import print_answer
    from indexer.search.query import Query

    named, args.index = args.index is not None, args.index or str(current().index_dir)
    k = args.k if args.k is not None else MOST_ENTRIES if args.atom else 5
    query = Query(text=args.query, k=k, mode=args.mode, exact=args.exact, published_after=args.after,
                  published_before=args.before, outlets=tuple(args.outlet), authors=tuple(args.author),
                  languages=tuple(args.language), tags=tuple(args.tag), sort=args.sort,
                  recency_half_life_days=args.recency_half_life,
                  facets=tuple(f.strip() for f in args.facets.split(",") if f.strip()) if args.facets else (),
                  collapse=args.collapse, min_relevance=args.min_relevance, group=args.group)
    try:
        query.check(MAX_K)  # the one validation, here before a server or the index is asked
    except QueryError as exc:
        name = FLAG_OF.get(exc.field, f"--{exc.field}")
        raise QueryError(str(exc).replace(exc.field, name, 1) if str(exc).startswith(exc.field) else str(exc),
                         exc.field) from None
    if args.atom:
        return print_feed(args, query)
    if args.url:  # a running server holds the model and the index already: no numpy, no loading here
        from indexer.cli.client import search

        answer = json.loads(search(args.url, "/search", api_params(query)))
    else:
        answer = search_here(args, query)
    searched = f"the index at {args.url}" if args.url else args.index.rstrip("/") + "/"
    print_answer(answer, args.json, sys.stdout.isatty() and not args.json, searched,
                 default=not args.url and not named)
    return 0


def api_params(query) -> dict:
    """A Query as the API's query parameters."""
    return {"q": query.text, "k": query.k, "mode": query.mode, "exact": "true" if query.exact else None,
            "published_after": query.published_after, "published_before": query.published_before,
            "outlet": query.outlets, "author": query.authors, "language": query.languages, "tag": query.tags,
            "sort": query.sort, "recency_half_life_days": query.recency_half_life_days,
            "facets": ",".join(query.facets) or None, "collapse": query.collapse,
            "min_relevance": query.min_relevance, "group": query.group}


def print_feed(args: argparse.Namespace, query) -> int:
    """The search as GET /search.atom gives it: asked of the server (--url), or built here."""
    if args.url:
        from indexer.cli.client import search

        params = {name: value for name, value in api_params(query).items()
                  if name not in ("sort", "group", "facets", "recency_half_life_days")}  # the feed's own
        sys.stdout.buffer.write(search(args.url, "/search.atom", params))
        return 0
    from indexer.search.atom import feed_query, search_feed

    model = model_for_index(args.model, current().precision, Path(args.index))
    searcher = searcher_here(Path(args.index), model)
    query = feed_query(query)
    feed = search_feed(query, searcher.answer(query), searcher.index.info.built_at, self_url=args.feed_url)
    sys.stdout.buffer.write(feed.body)
    return 0


def warn_of_damaged_cache(out: Path) -> None:
    """The embedding cache is derived data: damage there is said, never an error."""
    from indexer.index.cache import CACHE_FILE, cache_problem

    problem = cache_problem(out)
    if problem is not None:
        print(f"semsearch: warning: the embedding cache {out / CACHE_FILE} is damaged ({problem}); the next "
              "`index` sets it aside and starts a new one (nothing the index holds is lost)", file=sys.stderr)


def run_follow(args: argparse.Namespace) -> int:
    """Poll the feeds (once, or every --interval seconds until stopped) and index what changed."""
    import time

    from indexer.index.build import update_documents
    from indexer.feeds.follow import poll
    from indexer.feeds.fetcher import FeedLimits

    root = Path(args.index)
    try:
        limits = FeedLimits.of(current())
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    model = model_for_index(args.model, args.precision, root)
    engine = engine_here(root, model)  # the one asked for (--engine), for a new index too

    def live_hashes(doc_ids: list[str]) -> dict[str, str]:
        if engine.current() is None:  # a new index: everything is new
            return {}
        live = engine.writer().live_documents(doc_ids)
        return {doc_id: d.content_hash for doc_id, d in live.items()}

    while True:
        report = poll(args.feeds, root, lambda documents: update_documents(root, model, documents, [], engine),
                      limits, live_hashes)
        print(f"{count(report.feeds, 'feed')}, {count(report.items, 'item')}, {count(report.fetched, 'page')} "
              f"fetched, {len(report.changed)} added or changed, {len(report.failures)} failed"
              + (f" ({report.refusals} refused by the fetch policy)" if report.refusals else ""), flush=True)
        if args.once:
            return 0 if not report.failures else 1
        time.sleep(max(args.interval, 1.0))


def run_show(args: argparse.Namespace) -> int:
    """A stored document (its text as kept and its passages), or with no id the list of them."""
    reader = engine_here(Path(args.index), stored_model(args)).reader()
    if args.doc_id is None:
        total, page = reader.document_ids(0, 1_000_000)
        if args.json:
            print(json.dumps({"total": total, "offset": 0, "documents": [
                {"doc_id": d, "title": t, "source": s, "origin": o} for d, t, s, o in page]}, indent=2, ensure_ascii=False))
        else:
            for doc_id, title, source, origin in page:
                print(f"{doc_id}\t{title}\t{source}\t{origin}")
        return 0
    kept = reader.document(args.doc_id)
    if kept is None:
        raise DocumentError(f"no document with id {args.doc_id!r} in {args.index} (`semsearch show --index "
                            f"{args.index}` lists them)")
    record = kept.record()
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return 0
    about = " · ".join(str(v) for v in (record["outlet"], record["published_at"], ", ".join(record["authors"])) if v)
    print(f"{record['title']}\n{record['source']} ({record['origin']}){' · ' + about if about else ''}\n")
    for passage in record["passages"]:
        where = " · ".join(part for part in (passage["section"], f"¶{passage['paragraph']}") if part)
        print(f"[{passage['start']}:{passage['end']}] {where}\n{passage['text']}\n")
    return 0


class RecordedModel(NamedTuple):
    """The model an index records, as far as reading its stored documents needs it."""

    name: str
    dimension: int


def stored_model(args: argparse.Namespace):
    """What opening the index to read stored text needs: the model the index records (no model
    loaded, a second less to start), or where it records none the model itself (whose engine then
    says what is missing)."""
    from indexer.index.engine import recorded_model

    kind, options = engine_choice()
    try:
        recorded = recorded_model(Path(args.index), kind, **options)
    except ValueError as exc:
        raise QueryError(str(exc)) from exc
    if recorded is None:
        return model_for_index(args.model, current().precision, Path(args.index))
    return RecordedModel(recorded["name"], int(recorded["dimension"]))


def search_here(args: argparse.Namespace, query) -> dict:
    """The answer from the index folder itself, in the API's JSON form."""
    from indexer.search.searcher import answer_record

    model = model_for_index(args.model, current().precision, Path(args.index))
    return answer_record(query.text, searcher_here(Path(args.index), model).answer(query))


def searcher_here(index: Path, model):
    """A searcher of the index folder with the relevance weights for it (its calibration, else
    the shipped ones); a calibration that cannot be used is said on stderr."""
    from indexer.search.relevance import relevance_for
    from indexer.search.searcher import FusionParams, Searcher

    relevance, warning = relevance_for(model.name, index)
    if warning:
        print(f"semsearch: warning: {warning}", file=sys.stderr)
    return Searcher(engine_here(index, model).reader(), model, FusionParams.of(current()), relevance)


def run_calibrate(args: argparse.Namespace) -> int:
    """Fit the relevance weights on the index and keep them in its folder."""
    from indexer.search import relevance
    from indexer.eval.questions import read_off_topic, read_questions

    index = Path(args.index)
    questions, off_topic = read_questions(Path(args.questions)), read_off_topic(Path(args.off_topic))
    model = model_for_index(args.model, current().precision, index)
    searcher = searcher_here(index, model)
    try:
        found = relevance.calibrate(searcher, questions, off_topic)
    except ValueError as exc:
        raise QueryError(str(exc)) from exc
    path = relevance.save(found, index, model.name, Path(args.questions), Path(args.off_topic))
    print("\n".join([*found.lines(), f"wrote {path}: searches of {index} use these weights from now on "
                     f"(a running service within its reload interval); delete the file to go back"]))
    return 0


def model_for_index(model_path: str | None, precision: str | None, root: Path | None, own_engine: bool = False):
    """The model to build or search the index at root with (None: a new index): at the precision
    asked for, else the one the index was built with, else the default. Without torch whenever the
    model's recipe is cached (about 4 s less to start)."""
    from indexer.model.embedding import choose_precision, light_model_for
    from indexer.index.engine import built_with

    kind, options = engine_choice(own_engine)
    try:
        recorded = built_with(root, kind, **options) if root else None
    except ValueError as exc:
        raise QueryError(str(exc)) from exc
    return light_model_for(model_path, precision=choose_precision(precision, recorded))


def engine_choice(own_engine: bool = False) -> tuple[str | None, dict]:
    """The engine asked for (--engine or SEMSEARCH_ENGINE; None: the index's own, else faiss, as
    always with own_engine) and its options (indexer/settings.py)."""
    settings = current()
    return None if own_engine else settings.engine, settings.engine_options()


def engine_here(root: Path, model, own_engine: bool = False):
    """The index engine the service would use for root (engine_choice)."""
    from indexer.index.engine import open_engine

    kind, options = engine_choice(own_engine)
    try:
        return open_engine(root, model.name, model.dimension, kind, **options)
    except ValueError as exc:
        raise QueryError(str(exc)) from exc


def run_eval(args: argparse.Namespace) -> int:
    from indexer.eval.evaluation import evaluate_dataset, format_table
    from indexer.search.searcher import FusionParams

    if Path(args.dataset).is_file():
        report = eval_questions(args)
    else:
        if args.documents:
            raise QueryError("--documents goes with a question file; a BEIR dataset brings its own corpus")
        index = Path(args.index) if args.index else None
        model = model_for_index(args.model, args.precision, index)
        kind, options = engine_choice()
        report = evaluate_dataset(Path(args.dataset), args.split, model, index=index,
                                  fusion=FusionParams.of(current()), engine={"kind": kind, **options})
        print(format_table(report))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def eval_questions(args: argparse.Namespace) -> dict:
    """hit@1, hit@3 and MRR@10 of a question file on an index (built first from --documents)."""
    import tempfile

    from indexer.index.build import build_from_documents
    from indexer.text.documents import read_folder
    from indexer.eval.questions import evaluate_questions, format_report, read_questions

    questions = read_questions(Path(args.dataset))
    with tempfile.TemporaryDirectory(prefix="semsearch-questions-") as scratch:
        index = Path(args.index or (scratch if args.documents else current().index_dir))
        model = model_for_index(args.model, args.precision, index)
        if args.documents:
            documents = [d for folder in args.documents for d in read_folder(Path(folder))]
            engine = engine_here(index, model)
            build_from_documents(documents, index, model, origin=", ".join(args.documents), engine=engine)
        searcher = searcher_here(index, model)
        report = evaluate_questions(searcher, questions, Path(args.dataset))
    print(format_report(report))
    return report

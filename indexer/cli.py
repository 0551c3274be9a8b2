"""The `semsearch` command line: index, serve, search, eval."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path

from indexer.errors import COLLAPSE, FACETS, MODES, SORTS, DocumentError, IndexDamaged, IndexUnavailable, ModelError, \
    QueryError

# Same variables the service's Settings read (prefix SEMSEARCH_), so both edges agree on defaults.
DEFAULT_INDEX = os.environ.get("SEMSEARCH_INDEX_DIR", "index")
DEFAULT_MODEL = os.environ.get("SEMSEARCH_MODEL_PATH") or None
DEFAULT_PRECISION = os.environ.get("SEMSEARCH_PRECISION") or None
ACCEPT_LOSS_HELP = "repair even if documents ingested over HTTP cannot be read back (they are named first)"
PRECISION_HELP = ("model arithmetic: int8-static, int8, bf16 or fp32 (default: the index's own; int8-static for a "
                  "new index; see the README)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="semsearch", description="Semantic search over news articles.")
    commands = top.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="build the index from a folder of articles")
    index.add_argument("seeds", nargs="?", default="seeds", help="folder of articles (default: seeds)")
    index.add_argument("--out", default=DEFAULT_INDEX, help="index folder (default: index)")
    index.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model folder")
    index.add_argument("--precision", default=DEFAULT_PRECISION, help=PRECISION_HELP)
    index.add_argument("--check", action="store_true",
                       help="change nothing; exit 1 naming the documents the index is stale for")
    index.add_argument("--force", action="store_true", help="write a new generation even if nothing changed")
    index.add_argument("--prune", action="store_true",
                       help="allow removing more than half of the index's folder documents (files gone from the folder)")
    index.add_argument("--accept-loss", action="store_true", help=ACCEPT_LOSS_HELP)

    repair = commands.add_parser(
        "repair", help="mend a damaged index, keeping every document that can be read back whole",
        description="Finds the newest whole generation when the index pointer is damaged, drops damaged segments "
                    "and indexes their documents again from what is intact (re-embedding only passages whose "
                    "vectors cannot be read back). Documents ingested over HTTP that nothing holds whole stop it, "
                    "named, unless --accept-loss is given.")
    repair.add_argument("index", nargs="?", default=DEFAULT_INDEX, help="index folder (default: index)")
    repair.add_argument("--accept-loss", action="store_true", help=ACCEPT_LOSS_HELP)
    repair.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model folder")

    serve = commands.add_parser("serve", help="run the HTTP API and search page")
    serve.add_argument("--index", default=DEFAULT_INDEX, help="index folder (default: index)")
    serve.add_argument("--host", default=os.environ.get("SEMSEARCH_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("SEMSEARCH_PORT", "8000")))
    serve.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model folder")

    search = commands.add_parser("search", help="search the index from the terminal")
    search.add_argument("query")
    search.add_argument("--index", default=DEFAULT_INDEX, help="index folder (default: index)")
    search.add_argument("-k", type=int, default=5, help="number of results, 1..50 (default: 5)")
    search.add_argument("--mode", choices=MODES, default="hybrid")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.add_argument("--exact", action="store_true", help="exact dense search, never the approximate index")
    search.add_argument("--after", help="only articles published at or after this ISO date or date-time")
    search.add_argument("--before", help="only articles published before this (a date alone: up to its end)")
    for flag, what in (("outlet", "outlet"), ("author", "author"), ("language", "language"), ("tag", "tag")):
        search.add_argument(f"--{flag}", action="append", default=[], help=f"only this {what} (repeatable)")
    search.add_argument("--sort", choices=SORTS, default="relevance", help="newest: the matches, newest first")
    search.add_argument("--recency-half-life", type=float, metavar="DAYS",
                        help="boost recent articles: scores halve every DAYS days of age")
    search.add_argument("--facets", help=f"comma-separated, any of {','.join(FACETS)}: document counts per value")
    search.add_argument("--collapse", choices=COLLAPSE, help="story: near-identical passages of other articles once")
    search.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model folder")
    search.add_argument("--url", default=os.environ.get("SEMSEARCH_URL") or None,
                        help="ask the semsearch server at this address (e.g. http://127.0.0.1:8000) instead of "
                             "loading the index here: much faster (default: SEMSEARCH_URL)")

    doctor = commands.add_parser(
        "doctor", help="this CPU's class, the precision a new index gets and why, and how the index's runs here")
    doctor.add_argument("--index", default=DEFAULT_INDEX, help="index folder (default: index)")
    doctor.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model folder")

    evaluate = commands.add_parser(
        "eval", help="score every retrieval mode on a BEIR-format dataset, or an index on your own questions",
        description="A BEIR folder: nDCG@10, Recall@100 and MRR@10 per mode. A question file (JSON Lines of "
                    "question, doc_id and answers, see indexer/questions.py): hit@1, hit@3 and MRR@10 per mode "
                    "on --index, or on an index built from --documents.")
    evaluate.add_argument("dataset", help="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv; "
                                          "or a question file (.jsonl)")
    evaluate.add_argument("--split", default="test", help="qrels split to score (default: test)")
    evaluate.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    evaluate.add_argument("--index", help="keep the dataset's index in this folder (reused when already built "
                                          "there); with a question file, the index to check (default: index)")
    evaluate.add_argument("--documents", action="append", metavar="FOLDER",
                          help="with a question file: index these folders first (repeatable), into --index "
                               "or a temporary folder")
    evaluate.add_argument("--model", default=DEFAULT_MODEL, help="sentence-transformers model folder")
    evaluate.add_argument("--precision", default=DEFAULT_PRECISION, help=PRECISION_HELP)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one command, turning domain errors into one clear message and exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="semsearch: %(levelname)s: %(message)s", stream=sys.stderr)
    for noisy in ("sentence_transformers", "transformers", "faiss", "bm25s", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return {"index": run_index, "serve": run_serve, "search": run_search, "eval": run_eval,
                "repair": run_repair, "doctor": run_doctor}[args.command](args)
    except BrokenPipeError:  # `semsearch search ... | head` stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except IndexUnavailable as exc:
        print(f"semsearch: error: {exc.message}\n  fix: {exc.fix}", file=sys.stderr)
    except ModelError as exc:
        print(f"semsearch: error: {exc}\n  fix: {exc.fix}", file=sys.stderr)
    except (DocumentError, QueryError, OSError) as exc:
        print(f"semsearch: error: {exc}", file=sys.stderr)
    except sqlite3.Error as exc:  # an index file that cannot be read is damage, never a bug
        index = getattr(args, "out", None) or getattr(args, "index", None) or DEFAULT_INDEX
        print(f"semsearch: error: an index file in {index} cannot be read ({exc})\n  fix: semsearch repair {index}",
              file=sys.stderr)
    except KeyboardInterrupt:
        print("semsearch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one line; the traceback on request
        if os.environ.get("SEMSEARCH_DEBUG"):
            raise
        print(f"semsearch: unexpected error: {type(exc).__name__}: {exc}\n"
              "  this is a bug; rerun with SEMSEARCH_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return 70
    return 2


def run_index(args: argparse.Namespace) -> int:
    from indexer.build import build_index, check
    from indexer.documents import read_folder

    seeds, out = Path(args.seeds), Path(args.out)
    model = model_for_index(args.model, args.precision, out)
    folder = list(read_folder(seeds))
    engine = engine_from_environment(out, model)
    damage = engine.inspect()
    if args.check and not damage.intact:
        raise IndexDamaged("; ".join(damage.problems), f"semsearch repair {out}")
    if not damage.intact:  # mend first: the reindex below then restores folder documents lost with it
        print_repair(out, model, engine, args.accept_loss)
    changes = check(out, model.name, model.dimension, folder, engine)
    if args.check:
        if not changes.stale:
            print(f"index {args.out} is up to date with {args.seeds} ({changes.unchanged} documents)")
            return 0
        for label, ids in (("added", changes.added), ("changed", changes.changed), ("removed", changes.removed)):
            if ids:
                print(f"stale: {len(ids)} {label}: {', '.join(ids[:20])}{' …' if len(ids) > 20 else ''}")
        print(f"  fix: semsearch index {args.seeds} --out {args.out}", file=sys.stderr)
        return 1
    if not changes.stale and changes.unchanged and not args.force:
        passages = engine.writer().health()["passages"]
        print(f"added 0, changed 0, removed 0, unchanged {changes.unchanged}; embedded 0 of {passages} passages")
        print(f"index {args.out} is already up to date: nothing written")
        return 0
    summary = build_index(out, model, folder, force=args.force, origin=str(seeds), engine=engine, prune=args.prune)
    for done in engine.maintain():
        print(done)
    c = summary.changes
    print(f"added {len(c.added)}, changed {len(c.changed)}, removed {len(c.removed)}, unchanged {c.unchanged}; "
          f"embedded {summary.passages_embedded} of {summary.passages} passages in {summary.seconds:.1f}s")
    if summary.generation is None:
        print(f"index {args.out} is already up to date: nothing written")
    else:
        print(f"indexed {summary.documents} documents, {summary.passages} passages, "
              f"{summary.sentences} sentences -> {summary.generation}")
    return 0


def run_repair(args: argparse.Namespace) -> int:
    index = Path(args.index)
    model = model_for_index(args.model, None, index)
    print_repair(index, model, engine_from_environment(index, model), args.accept_loss)
    return 0


def run_doctor(args: argparse.Namespace) -> int:
    """Print the CPU class, the precision table's choice for it and why, and, for an existing index,
    whether its precision runs natively here, with query embedding measured for both."""
    from indexer.cpu import TABLE, UnknownClass, native, query_p50_ms, read_cpu
    from indexer.embedding import choose_precision, light_model_for
    from indexer.engine import built_with

    try:
        cpu = read_cpu()
    except UnknownClass as exc:
        raise QueryError(str(exc)) from exc
    choice = TABLE[cpu.cpu_class]
    print(f"CPU: {cpu.describe()}")
    fresh = light_model_for(args.model, precision=choice.precision)
    print(f"a new index is built at precision {choice.precision} (query embedding p50 "
          f"{query_p50_ms(fresh.embed_query):.1f} ms here): {choice.why}")
    recorded = built_with(Path(args.index), os.environ.get("SEMSEARCH_ENGINE", "faiss"))
    if recorded is None:
        print(f"index {args.index}: none yet")
        return 0
    precision = choose_precision(None, recorded)
    how = "runs natively here" if native(precision, cpu) else "is emulated here (correct, slower)"
    model = fresh if precision == choice.precision else light_model_for(args.model, precision=precision)
    print(f"index {args.index}: built with {recorded}; its precision {precision} {how}, query embedding p50 "
          f"{query_p50_ms(model.embed_query):.1f} ms")
    if precision != choice.precision:
        print(f"  to move it to {choice.precision}: semsearch index FOLDER --out {args.index} --precision "
              f"{choice.precision} (re-embeds every passage)")
    return 0


def print_repair(index: Path, model, engine, accept_loss: bool) -> None:
    from indexer.repair import repair_index, report

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

    # The service reads its Settings from the environment; pass the flags that way.
    os.environ["SEMSEARCH_INDEX_DIR"] = str(args.index)
    if args.model:
        os.environ["SEMSEARCH_MODEL_PATH"] = str(args.model)
    from service.logs import log_config
    from service.protocol import HeadDeadlineProtocol, header_timeout

    level = os.environ.get("SEMSEARCH_LOG_LEVEL", "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise QueryError(f"SEMSEARCH_LOG_LEVEL must be debug, info, warning or error, not {level!r}")
    try:
        header_timeout()
    except ValueError as exc:
        raise QueryError(f"SEMSEARCH_HEADER_TIMEOUT is not a number: {exc}") from exc
    uvicorn.run("service.app:create_app", factory=True, host=args.host, port=args.port,
                log_config=log_config(level), access_log=False, http=HeadDeadlineProtocol)
    return 0


def run_search(args: argparse.Namespace) -> int:
    from indexer.client import print_answer

    if not 1 <= args.k <= 50:
        raise QueryError("-k must be between 1 and 50")
    facets = tuple(f.strip() for f in args.facets.split(",") if f.strip()) if args.facets else ()
    if args.url:  # a running server holds the model and the index already: no numpy, no loading here
        from indexer.client import search

        answer = search(args.url, {
            "q": args.query, "k": args.k, "mode": args.mode, "exact": "true" if args.exact else None,
            "published_after": args.after, "published_before": args.before, "outlet": args.outlet,
            "author": args.author, "language": args.language, "tag": args.tag, "sort": args.sort,
            "recency_half_life_days": args.recency_half_life, "facets": ",".join(facets) or None,
            "collapse": args.collapse})
    else:
        answer = search_here(args, facets)
    print_answer(answer, args.json, color=sys.stdout.isatty() and not args.json)
    return 0


def search_here(args: argparse.Namespace, facets: tuple[str, ...]) -> dict:
    """The answer from the index folder itself, in the API's JSON form."""
    from indexer.search import Query, Searcher, hit_record

    model = model_for_index(args.model, DEFAULT_PRECISION, Path(args.index))
    searcher = Searcher(engine_from_environment(Path(args.index), model).reader(), model, fusion_from_environment())
    answer = searcher.answer(Query(text=args.query, k=args.k, mode=args.mode, exact=args.exact,
                                   published_after=args.after, published_before=args.before,
                                   outlets=tuple(args.outlet), authors=tuple(args.author),
                                   languages=tuple(args.language), tags=tuple(args.tag), sort=args.sort,
                                   recency_half_life_days=args.recency_half_life, facets=facets,
                                   collapse=args.collapse))
    return {"query": args.query, "results": [hit_record(h) for h in answer.hits], "facets": answer.facets}


def model_for_index(model_path: str | None, precision: str | None, root: Path | None):
    """The model to build or search the index at root with (None: a new index): at the precision
    asked for, else the one the index was built with, else the default. Without torch whenever the
    model's recipe is cached (about 4 s less to start)."""
    from indexer.embedding import choose_precision, light_model_for
    from indexer.engine import built_with

    try:
        recorded = built_with(root, os.environ.get("SEMSEARCH_ENGINE", "faiss")) if root else None
    except ValueError as exc:
        raise QueryError(f"SEMSEARCH_ENGINE: {exc}") from exc
    return light_model_for(model_path, precision=choose_precision(precision, recorded))


def engine_from_environment(root: Path, model):
    """The index engine the service would use for root: SEMSEARCH_ENGINE (default faiss), with
    SEMSEARCH_ANN_MIN_ROWS (when a segment gets an approximate index)."""
    from indexer.dense import DenseParams
    from indexer.engine import open_engine

    try:
        rows = int(os.environ.get("SEMSEARCH_ANN_MIN_ROWS", DenseParams().ann_min_rows))
    except ValueError as exc:
        raise QueryError(f"SEMSEARCH_ANN_MIN_ROWS is not a whole number: {exc}") from exc
    try:
        return open_engine(root, model.name, model.dimension, os.environ.get("SEMSEARCH_ENGINE", "faiss"),
                           params=DenseParams(ann_min_rows=max(rows, 1)))
    except ValueError as exc:
        raise QueryError(f"SEMSEARCH_ENGINE: {exc}") from exc


def fusion_from_environment():
    """The service's fusion variables (service/settings.py), so `search` ranks as the API does."""
    from indexer.search import FusionParams

    default, env = FusionParams(), os.environ
    try:
        params = FusionParams(
            method=env.get("SEMSEARCH_FUSION_METHOD", default.method),
            rrf_k=int(env.get("SEMSEARCH_RRF_K", default.rrf_k)),
            depth=int(env.get("SEMSEARCH_FUSION_DEPTH", default.depth)),
            dense_weight=float(env.get("SEMSEARCH_DENSE_WEIGHT", default.dense_weight)),
            keyword_weight=float(env.get("SEMSEARCH_KEYWORD_WEIGHT", default.keyword_weight)))
    except ValueError as exc:
        raise QueryError(f"a SEMSEARCH_ fusion variable is not a number: {exc}") from exc
    if params.method not in ("rrf", "convex") or params.rrf_k < 1 or params.depth < 1 or \
            min(params.dense_weight, params.keyword_weight) < 0:
        raise QueryError("SEMSEARCH_FUSION_METHOD must be rrf or convex, SEMSEARCH_RRF_K and "
                         "SEMSEARCH_FUSION_DEPTH at least 1, the weights at least 0")
    return params


def run_eval(args: argparse.Namespace) -> int:
    from indexer.evaluation import evaluate_dataset, format_table

    if Path(args.dataset).is_file():
        report = eval_questions(args)
    else:
        if args.documents:
            raise QueryError("--documents goes with a question file; a BEIR dataset brings its own corpus")
        index = Path(args.index) if args.index else None
        model = model_for_index(args.model, args.precision, index)
        report = evaluate_dataset(Path(args.dataset), args.split, model, index=index,
                                  fusion=fusion_from_environment())
        print(format_table(report))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def eval_questions(args: argparse.Namespace) -> dict:
    """hit@1, hit@3 and MRR@10 of a question file on an index (built first from --documents)."""
    import tempfile

    from indexer.build import build_from_documents
    from indexer.documents import read_folder
    from indexer.questions import evaluate_questions, format_report, read_questions
    from indexer.search import Searcher

    questions = read_questions(Path(args.dataset))
    with tempfile.TemporaryDirectory(prefix="semsearch-questions-") as scratch:
        index = Path(args.index or (scratch if args.documents else DEFAULT_INDEX))
        model = model_for_index(args.model, args.precision, index)
        if args.documents:
            documents = [d for folder in args.documents for d in read_folder(Path(folder))]
            build_from_documents(documents, index, model, origin=", ".join(args.documents))
        engine = engine_from_environment(index, model)
        searcher = Searcher(engine.reader(), model, fusion_from_environment())
        report = evaluate_questions(searcher, questions, Path(args.dataset))
    print(format_report(report))
    return report


if __name__ == "__main__":
    sys.exit(main())

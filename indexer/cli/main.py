"""The `semsearch` command line: its arguments, and every error turned into one line and an exit code
(the commands themselves: indexer/cli/commands.py)."""

from __future__ import annotations

import argparse
import difflib
import errno
import logging
import os
import re
import shlex
import shutil
import sqlite3
import sys
from pathlib import Path

from indexer.engines import ENGINE_NAMES
from indexer.errors import COLLAPSE, FACETS, GROUPS, MODES, SORTS, DocumentError, EngineUnreachable, \
    IndexUnavailable, ModelError, QueryError, fix_command, program
from indexer.settings import SettingsError, current, described, override

ACCEPT_LOSS_HELP = "repair even if documents ingested over HTTP cannot be read back (they are named first)"


def parser() -> argparse.ArgumentParser:
    """The arguments of every command; defaults and the help of options that are settings come
    from the settings table (indexer/settings.py), the environment's values as defaults."""
    settings = current()
    index_dir = str(settings.index_dir)
    top = argparse.ArgumentParser(prog="semsearch", description="Semantic search over news articles; every "
                                  "setting is also an environment variable (`python -m indexer.settings` lists them).")
    commands = top.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="build the index from a folder of articles")
    index.add_argument("folder", nargs="?", default="seeds", metavar="FOLDER",
                       help="folder of articles: .txt, .md, .html and .jsonl files, read recursively (default: seeds)")
    index.add_argument("--out", default=index_dir, help=described("index_dir"))
    index.add_argument("--precision", default=settings.precision, help=described("precision"))
    index.add_argument("--check", action="store_true",
                       help="change nothing; exit 1 naming the documents the index is stale for")
    index.add_argument("--force", action="store_true", help="write a new generation even if nothing changed")
    index.add_argument("--prune", action="store_true",
                       help="allow removing more than half of the index's folder documents (files gone from the folder)")
    index.add_argument("--accept-loss", action="store_true", help=ACCEPT_LOSS_HELP)
    index.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="embed on a Ray cluster: at ADDRESS (host:port), else at RAY_ADDRESS, else on a local Ray "
                            "started for this build (needs the ray extra: pip install 'semsearch[ray]')")
    index.add_argument("--ray-actors", type=int, default=None, metavar="N",
                       help="with --ray: embedding actors, one CPU each (default: one per CPU of the cluster)")
    index_options(index, creates=True)

    repair = commands.add_parser(
        "repair", help="mend a damaged index, keeping every document that can be read back whole",
        description="Finds the newest whole generation when the index pointer is damaged, drops damaged segments "
                    "and indexes their documents again from what is intact (re-embedding only passages whose "
                    "vectors cannot be read back). Documents ingested over HTTP that nothing holds whole stop it, "
                    "named, unless --accept-loss is given.")
    index_argument(repair, index_dir, positional=True)
    repair.add_argument("--accept-loss", action="store_true", help=ACCEPT_LOSS_HELP)
    index_options(repair)

    move = commands.add_parser(
        "move", help="move an index to another engine (FAISS folder <-> Milvus) without embedding again",
        description="Copies every document the index serves, with its origin and vectors, into the other engine "
                    "in one commit; the index folder then records the new engine, and later commands use it. "
                    "The old engine's copy is left as it was.")
    index_argument(move, index_dir, positional=True)
    move.add_argument("--to", required=True, choices=ENGINE_NAMES, help="the engine to move the index to")
    move.add_argument("--milvus-uri", help="with --to milvus: " + described("milvus_uri"))
    index_options(move, engine=False)  # the engine is --to's, and --milvus-uri is above

    serve = commands.add_parser("serve", help="run the HTTP API and search page")
    index_argument(serve, index_dir)
    serve.add_argument("--host", default=settings.host, help=described("host"))
    serve.add_argument("--port", type=int, default=settings.port, help=described("port"))
    index_options(serve, creates=True)  # with SEMSEARCH_API_KEY, a POST may start an index

    search = commands.add_parser("search", help="search the index from the terminal")
    search.add_argument("query")
    search.add_argument("--index", help=described("index_dir"))
    search.add_argument("-k", type=int, help="number of results, 1..50 (default: 5; with --atom, 50 entries)")
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
    search.add_argument("--group", choices=GROUPS, help="each article once. article: with up to two more of its "
                        "matching passages; document: ranked as the evaluation ranks articles")
    search.add_argument("--min-relevance", type=float, metavar="R",
                        help="leave out results below this relevance, 0..1 (default: the weak grade's floor; 0 keeps all)")
    search.add_argument("--atom", action="store_true", help="print the search as an Atom feed: the newest articles "
                        "that answer it, one entry each (GET /search.atom's feed; for a cron job that publishes it)")
    search.add_argument("--feed-url", metavar="URL", help="with --atom: the address the feed will be read at (its "
                        "self link)")
    index_options(search)
    search.add_argument("--url", default=settings.url, help=described("url") + ": much faster")

    doctor = commands.add_parser(
        "doctor", help="this CPU's class, the precision a new index gets and why, and how the index's own precision runs here")
    index_argument(doctor, index_dir)
    index_options(doctor)

    follow = commands.add_parser("follow", help="index the articles of news feeds (RSS, Atom, JSON Feed) and keep "
                                 "them current")
    follow.add_argument("feeds", nargs="+", metavar="FEED_URL")
    follow.add_argument("--index", default=index_dir, help=described("index_dir") + "; created if there is none")
    follow.add_argument("--once", action="store_true", help="poll each feed once and exit (for cron and CI)")
    follow.add_argument("--interval", type=float, default=settings.feed_interval,
                        help="without --once: " + described("feed_interval"))
    follow.add_argument("--precision", default=settings.precision, help=described("precision"))
    index_options(follow, creates=True)

    show = commands.add_parser("show", help="a stored document as the index keeps it: its text and its passages")
    show.add_argument("doc_id", nargs="?", help="the document's id (none: list the documents)")
    index_argument(show, index_dir)
    show.add_argument("--json", action="store_true", help="print it as JSON (GET /documents/{doc_id}'s shape)")
    index_options(show)

    calibrate = commands.add_parser(
        "calibrate", help="fit the relevance (its grades and \"no good match\") to the index's model and articles",
        description="Fit the relevance weights from questions whose answers the index holds and queries it has "
                    "no answer for, and keep them in the index folder (relevance.json), where searches, the "
                    "service and the page use them in place of the shipped ones. Needed for a model other "
                    "than the packaged one; useful for a corpus unlike news.")
    calibrate.add_argument("questions", help="question file: JSON Lines of question, doc_id and answers "
                                             "(as for `semsearch eval`)")
    calibrate.add_argument("--off-topic", required=True, metavar="FILE",
                           help="queries the index has no answer for, one per line")
    index_argument(calibrate, index_dir)
    index_options(calibrate)

    evaluate = commands.add_parser(
        "eval", help="score every retrieval mode on a BEIR-format dataset, or an index on your own questions",
        description="A BEIR folder: nDCG@10, Recall@100 and MRR@10 per mode. A question file (JSON Lines of "
                    "question, doc_id and answers, see indexer/eval/questions.py): hit@1, hit@3 and MRR@10 per mode "
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
    evaluate.add_argument("--precision", default=settings.precision, help=described("precision"))
    index_options(evaluate, creates=True)
    return top


def parse(top: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments; an option a command does not have is refused by that command's own usage,
    with the option it most likely meant ("--outlt": did you mean --outlet?)."""
    command = next(action for action in top._actions if isinstance(action, argparse._SubParsersAction))
    given = sys.argv[1:] if argv is None else argv
    if given and not given[0].startswith("-") and given[0] not in command.choices:
        guess = difflib.get_close_matches(given[0], list(command.choices), n=1)
        top.error(f"unknown command {given[0]!r}" + (f" (did you mean {guess[0]}?)" if guess else "") +
                  f"; the commands: {', '.join(command.choices)}")
    args, unknown = top.parse_known_args(argv)
    if unknown:
        sub = command.choices[args.command]
        flags = [flag for action in sub._actions for flag in action.option_strings]
        guess = next((difflib.get_close_matches(word.split("=")[0], flags, n=1) for word in unknown
                      if word.startswith("-")), [])
        sub.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" (did you mean {guess[0]}?)" if guess else ""))
    return args


def index_argument(command: argparse.ArgumentParser, default: str, positional: bool = False) -> None:
    """The index folder a command works on: `--index DIR`, or a positional for repair and move."""
    if positional:
        command.add_argument("index", nargs="?", default=default, help=described("index_dir"))
    else:
        command.add_argument("--index", default=default, help=described("index_dir"))


def index_options(command: argparse.ArgumentParser, creates: bool = False, engine: bool = True) -> None:
    """The model and engine options every command that opens an index takes (the environment's
    otherwise). creates: the command may make a new index, which the engine option places;
    engine=False: the model only (move names its engine with --to)."""
    command.add_argument("--model", default=current().model_path, help=described("model_path"))
    if not engine:
        return
    engine_help = ("index engine for a new index (SEMSEARCH_ENGINE; default faiss); an existing index keeps the "
                   "one its folder records" if creates else
                   "the engine the index is in (SEMSEARCH_ENGINE); not needed: the index folder records it, and "
                   "naming another is an error")
    command.add_argument("--engine", choices=ENGINE_NAMES, help=engine_help)
    command.add_argument("--milvus-uri", help=described("milvus_uri"))


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one command, turning domain errors into one clear message and exit code."""
    try:
        settings = current()
    except SettingsError as exc:  # a bad SEMSEARCH_ variable: before anything else, whatever the command
        print(f"semsearch: error: {exc}\n  fix: {exc.fix}", file=sys.stderr)
        return 2
    args = parse(parser(), argv)
    from indexer.cli import commands

    # The engine flags stand over the environment's settings, without being written into it.
    override(engine=getattr(args, "engine", None), milvus_uri=getattr(args, "milvus_uri", None))

    for level in (logging.INFO, logging.WARNING, logging.ERROR):  # "semsearch: warning: ...", as printed ones read
        logging.addLevelName(level, logging.getLevelName(level).lower())
    logging.basicConfig(level=logging.INFO, format="semsearch: %(levelname)s: %(message)s", stream=sys.stderr)
    for noisy in ("sentence_transformers", "transformers", "faiss", "bm25s", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return getattr(commands, f"run_{args.command}")(args)
    except BrokenPipeError:  # `semsearch search ... | head` stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except EngineUnreachable as exc:  # the same command runs once the store answers again
        print(f"semsearch: error: {exc.message}\n  fix: {rerun(argv)}  # once it answers: {exc.fix}", file=sys.stderr)
    except IndexUnavailable as exc:
        print(f"semsearch: error: {exc.message}\n  fix: {exc.fix}", file=sys.stderr)
    except ModelError as exc:
        print(f"semsearch: error: {exc}\n  fix: {exc.fix}", file=sys.stderr)
    except (DocumentError, QueryError, OSError, sqlite3.Error) as exc:
        index = getattr(args, "out", None) or getattr(args, "index", None) or settings.index_dir
        if full_disk(exc):
            print(f"semsearch: error: {disk_full(Path(index), exc)}\n  fix: {rerun(argv)}", file=sys.stderr)
        elif not isinstance(exc, sqlite3.Error):
            print(f"semsearch: error: {exc}", file=sys.stderr)
        else:  # an index file that cannot be read is damage, never a bug
            print(f"semsearch: error: an index file in {index} cannot be read ({exc})\n  fix: "
                  f"{fix_command('repair', Path(index))}", file=sys.stderr)
    except KeyboardInterrupt:
        writes = args.command in ("index", "repair", "follow", "move")
        print("semsearch: interrupted" + ("; nothing half-done was published, the index in use is as it was, and "
                                          "running the same command again goes on from where this one stopped "
                                          "(the passages already embedded are kept)" if writes else ""),
              file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one line; the traceback on request
        if settings.debug:
            raise
        print(f"semsearch: unexpected error: {type(exc).__name__}: {exc}\n"
              "  this is a bug; rerun with SEMSEARCH_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return 70
    return 2


def full_disk(exc: Exception) -> bool:
    """A write the disk had no room for: ENOSPC or a quota, as the OS, numpy or SQLite report it."""
    text = str(exc)
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "database or disk is full" in text \
        or re.search(r"\d+ requested and \d+ written", text) is not None


def disk_full(index: Path, exc: Exception) -> str:
    """What to free: the disk holding the index, with its room now and the index's own size."""
    folder = next((p for p in (index, *index.absolute().parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(folder).free
    size = sum(f.stat().st_size for f in index.rglob("*") if f.is_file()) if index.is_dir() else 0
    return (f"the disk holding {index.absolute()} is full ({exc}); nothing was published, the index in use is "
            f"unchanged. Free space on it: {free / 1e6:,.0f} MB are free now, the index takes {size / 1e6:,.0f} MB, "
            "and a build writes its new files beside the old ones before it removes them")


def rerun(argv: list[str] | None) -> str:
    """The command the user ran, to run again as typed."""
    return shlex.join([*program(), *(sys.argv[1:] if argv is None else argv)])


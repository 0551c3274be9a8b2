"""The domain errors the two edges (command line, HTTP) translate into one shape, and the named
choices a query offers. Nothing here imports numpy or the model, so the command line can parse
its arguments and report errors, or ask a running server, without loading either."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

MODES = ("hybrid", "dense", "keyword")
SORTS = ("relevance", "newest")
FACETS = ("outlet", "month", "section", "author", "tag", "language")
COLLAPSE = ("story",)
GROUPS = ("article", "document")
FUSION_METHODS = ("relevance", "rrf", "convex")  # how hybrid mode orders (indexer/search/searcher.py FusionParams)
MAX_K = 50  # results per page
MOST_ENTRIES = 50  # entries of a search's Atom feed (articles)
MORE_PER_ARTICLE = 2  # with group=article: passages shown under an article's best one


class DocumentError(ValueError):
    """A document that cannot be read or is malformed."""


class QueryError(ValueError):
    """A query the user has to change: empty, too long, unknown mode, bad paging; field names the
    part of the request at fault (the API's name: q, k, published_after ...)."""

    def __init__(self, message: str, field: str = "q") -> None:
        super().__init__(message)
        self.field = field


class ModelError(RuntimeError):
    """The embedding model cannot be found or loaded; fix says what to do when it is not
    installing the packaged model or naming a model folder."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix or "unset SEMSEARCH_MODEL_PATH  # leave out --model too: the packaged model"


class IndexUnavailable(RuntimeError):
    """The index is missing, corrupt or built for another model; fix says which command mends it."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


class EngineUnreachable(IndexUnavailable):
    """The store the index lives in (a Milvus server, a Milvus Lite file another process holds)
    does not answer now; fix says what to check, and the command itself runs once it answers."""


class WriteFailed(OSError):
    """A change an engine could not write (a full disk, a store that stopped answering, a file it
    could not update): nothing of it was published, and the index serves what it served before."""


class WriteBusy(WriteFailed):
    """Another process (a replica on another machine, say) is writing the same index and did not
    finish in time: nothing was written; the same write succeeds once it has."""


class IndexDamaged(IndexUnavailable):
    """Files of a published index are missing, unreadable or fail their checksums: only a repair
    (never a fresh build, which would drop the documents ingested over HTTP) mends it."""


def program() -> list[str]:
    """`semsearch` as the user can run it: its name when the shell finds this installation by it;
    else the script's absolute path (the README's .venv/bin/semsearch, not on PATH); else this
    Python running the module."""
    beside = Path(sys.executable).parent / "semsearch"
    found = shutil.which("semsearch")
    if beside.is_file():
        return ["semsearch"] if found and Path(found).resolve() == beside.resolve() else [str(beside.absolute())]
    return [sys.executable, "-m", "indexer.cli"]


def fix_command(*words: object, note: str = "") -> str:
    """A fix as a shell line that runs as printed: the program (program()) and its arguments
    quoted (paths made absolute), any explanation after '#', which a shell ignores."""
    line = shlex.join([*program(), *(str(w.absolute()) if isinstance(w, Path) else str(w) for w in words)])
    return f"{line}  # {note}" if note else line

"""Every setting of semsearch in one table: its name, type, default and help. Each is read from the
environment as SEMSEARCH_<NAME> (RAY_ADDRESS for the Ray cluster, as Ray itself reads it).

The table is the Settings dataclass below: a field's annotation is its type, its default the
default, and its metadata the help and bounds. `current()` reads the environment once (again only
when a SEMSEARCH_ variable changes) with the command line's flags over it (`override`, never
written into os.environ); the service is given a Settings. The CLI's --help and the table in
docs/operations.md are made from it (`python -m indexer.settings` prints that table).

Light on purpose (the standard library and the engines' registry only): the command line reads
it before it knows whether it will load numpy or the model. The model's precision and the CPU
class are plain text here and checked where their choices live (indexer/model), which names the
fix.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Optional

from indexer.engines import ENGINE_NAMES
from indexer.errors import FUSION_METHODS

PREFIX = "SEMSEARCH_"
LOG_LEVELS = ("debug", "info", "warning", "error")
GROUPS = ("index and model", "search", "service", "feeds", "command line")


class SettingsError(ValueError):
    """A setting whose value cannot be used; fix undoes it."""

    def __init__(self, message: str, fix: str, variable: str = "") -> None:
        super().__init__(message)
        self.fix, self.variable = fix, variable


class Secret:
    """A value kept out of logs and reprs (an API key, a token)."""

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def setting(default: Any, help: str, group: str, *, least: float | None = None, above: float | None = None,
            most: float | None = None, variable: str | None = None, shown: str | None = None) -> Any:
    """One row of the table. least/above/most: bounds of a number; variable: the environment name
    when it is not SEMSEARCH_<NAME>; shown: the default as the docs give it, when it is computed."""
    assert group in GROUPS, group
    return field(default=default, metadata={"help": help, "group": group, "least": least, "above": above,
                                            "most": most, "variable": variable, "shown": shown})


@dataclass(frozen=True)
class Settings:
    """What semsearch can be told; build one with Settings.read() (the environment) or by keyword."""

    # index and model
    index_dir: Path = setting(Path("index"), "index folder that commands and the service use", "index and model")
    model_path: Optional[str] = setting(None, "sentence-transformers model folder; unset: the packaged all-MiniLM-L6-v2; "
                                        "hashing: the stand-in encoder (tests and benchmarks only)",
                                        "index and model")
    precision: Optional[str] = setting(None, "model arithmetic: int8-static, int8, int8-7bit, bf16 or fp32; unset: the "
                                       "index's own, and for a new index the one measured best for this CPU "
                                       "(`semsearch doctor` says which)", "index and model")
    backend: Literal["onnx", "torch"] = setting("onnx", "model runtime; onnx gives the same vectors, faster",
                                                "index and model")
    model_threads: int = setting(0, "CPU threads per embedding call; 0: the runtime's default", "index and model",
                                 least=0)
    model_spin: bool = setting(True, "let idle ONNX threads busy-wait (faster alone, slower under load)",
                               "index and model")
    cpu_class: Optional[str] = setting(None, "the CPU class the model runs for instead of the detected one (a class "
                                       "`semsearch doctor` names, such as avx2); for tests and odd virtual machines",
                                       "index and model")
    cache_dir: Optional[Path] = setting(None, "where each model's ONNX copies are kept", "index and model",
                                        shown="~/.cache/semsearch")
    engine: Optional[Literal[ENGINE_NAMES]] = setting(None, "index engine for a new index; unset: the index's own "
                                                      "(engine.json), else faiss", "index and model")
    milvus_uri: Optional[str] = setting(None, "Milvus Lite file (.db) or http(s)://host:port; unset: milvus.db in the "
                                        "index folder", "index and model")
    milvus_token: Optional[Secret] = setting(None, "Milvus token (user:password or an API key)", "index and model")
    milvus_timeout: float = setting(10.0, "seconds one call to Milvus may take before it is given up (the "
                                    "request then answers 503)", "index and model", above=0)
    ann_min_rows: int = setting(50_000, "segments with at least this many passages get an approximate index when "
                                "ingest or a merge writes them", "index and model", least=1)
    ray_address: Optional[str] = setting(None, "Ray cluster for `semsearch index --ray` (host:port); unset: a local Ray "
                                         "started for the build", "index and model", variable="RAY_ADDRESS")
    # search
    fusion_method: Literal[FUSION_METHODS] = setting("relevance", "how hybrid mode orders what the two lists found: "
                                                     "by the relevance shown (one score), or by fusing their ranks "
                                                     "(rrf) or scaled scores (convex)", "search")
    rrf_k: int = setting(60, "reciprocal rank fusion constant", "search", least=1)
    fusion_depth: int = setting(200, "how deep each list is read before fusing", "search", least=1)
    late_depth: int = setting(30, "how many of the first passages by relevance are graded again by late "
                              "interaction (their word pieces against the query's); 0: none", "search", least=0)
    dense_weight: float = setting(0.5, "weight of the dense list (rrf and convex)", "search", least=0)
    keyword_weight: float = setting(0.5, "weight of the keyword list (rrf and convex)", "search", least=0)
    # service
    host: str = setting("127.0.0.1", "address `semsearch serve` listens on (127.0.0.1: this machine only)", "service")
    port: int = setting(8000, "port `semsearch serve` listens on", "service", least=1, most=65535)
    api_key: Optional[Secret] = setting(None, "Bearer key for POST/DELETE /documents and /admin; unset: those are "
                                        "disabled", "service")
    reload_interval: float = setting(0.5, "seconds between checks for a new index generation (a write elsewhere is "
                                     "served within about this); 0: never", "service",
                                     least=0)
    merge: bool = setting(True, "merge small segments in the background after ingests", "service")
    threaded_search_passages: int = setting(200_000, "indexes with at least this many passages search in the thread "
                                            "pool (two searches share the cores)", "service", least=0)
    max_body_bytes: int = setting(4_000_000, "largest request body; larger ones get 413 before anything is read",
                                  "service", least=1024)
    max_filter_values: int = setting(1000, "most doc_id or source values in one search (422 beyond)", "service",
                                     least=1)
    max_metadata_values: int = setting(100, "most outlet, author, language or tag values in one search (422 "
                                       "beyond; each value is a condition the engine tests on every row)",
                                       "service", least=1)
    max_document_chars: int = setting(200_000, "longest document text accepted by POST /documents or from a "
                                      "followed feed", "service", least=1)
    max_documents_per_call: int = setting(100, "most documents in one POST /documents", "service", least=1)
    max_concurrent_requests: int = setting(64, "requests answered at once; more get 503 with Retry-After (the health "
                                           "probes never do)", "service", least=1)
    body_timeout: float = setting(10.0, "seconds a request body may stop arriving before 408", "service", above=0)
    header_timeout: float = setting(10.0, "seconds a connection has to send each request's line and headers",
                                    "service", above=0)
    log_level: Literal[LOG_LEVELS] = setting("info", "the service's log level", "service")
    # feeds
    feeds: str = setting("", "comma-separated feed URLs (RSS, Atom, JSON Feed) the service polls and indexes, as "
                         "`semsearch follow` does; empty: none", "feeds")
    feed_interval: float = setting(600.0, "seconds between two polls of the feeds", "feeds", least=1)
    feed_hosts: str = setting("", "hosts besides each feed's own that its articles may be fetched from: "
                              "comma-separated host, host:port, *.domain or *", "feeds")
    feed_timeout: float = setting(15.0, "seconds for one fetch, redirects included", "feeds", least=0.1)
    feed_max_bytes: int = setting(5_000_000, "largest feed or page fetched", "feeds", least=1024)
    feed_host_delay: float = setting(1.0, "seconds between two fetches from one host", "feeds", least=0)
    # command line
    url: Optional[str] = setting(None, "the semsearch server `semsearch search` asks (e.g. http://127.0.0.1:8000) "
                                 "instead of loading the index itself", "command line")
    debug: bool = setting(False, "print the traceback of an unexpected error", "command line")

    def __post_init__(self) -> None:
        problems = []
        for item in fields(self):
            try:
                object.__setattr__(self, item.name, parsed(item, getattr(self, item.name)))
            except SettingsError as exc:
                problems.append(exc)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise SettingsError("; ".join(map(str, problems)),
                                f"unset {' '.join(p.variable for p in problems)}  # or set each as said")

    @classmethod
    def read(cls, environ: typing.Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """The environment's settings (empty variables count as unset), with overrides (None: not
        given) over them."""
        environ = os.environ if environ is None else environ
        values = {item.name: environ[variable_of(item)] for item in fields(cls)
                  if environ.get(variable_of(item), "").strip()}
        return cls(**{**values, **{name: value for name, value in overrides.items() if value is not None}})

    def but(self, **changes: Any) -> "Settings":
        """These settings with some changed (None: left as they are)."""
        return replace(self, **{name: value for name, value in changes.items() if value is not None})

    @property
    def feed_urls(self) -> list[str]:
        return [url.strip() for url in self.feeds.split(",") if url.strip()]

    @property
    def ingest_enabled(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value())

    @property
    def model_cache(self) -> Path:
        return self.cache_dir or Path.home() / ".cache" / "semsearch"

    def engine_options(self) -> dict:
        """What open_engine is given besides the folder and the model."""
        return {"ann_min_rows": self.ann_min_rows, "uri": self.milvus_uri, "timeout": self.milvus_timeout,
                "token": self.milvus_token.get_secret_value() if self.milvus_token else None}


def variable_of(item) -> str:
    return item.metadata["variable"] or PREFIX + item.name.upper()


@functools.cache
def types() -> dict[str, Any]:
    """Each field's type, resolved once, when the first Settings is made."""
    return typing.get_type_hints(Settings)


def parsed(item, value: Any) -> Any:
    """value (a string from the environment, or a value given by keyword) as the field's type."""
    kind, optional = types()[item.name], False
    if typing.get_origin(kind) is typing.Union:
        kind, optional = next(a for a in typing.get_args(kind) if a is not type(None)), True
    if value is None:
        if optional:
            return None
        raise invalid(item, value, "set")
    given, text = value, value.strip() if isinstance(value, str) else None
    try:
        if typing.get_origin(kind) is Literal:
            if value not in typing.get_args(kind):
                raise ValueError
        elif kind is bool:
            value = value if isinstance(value, bool) else {"1": True, "true": True, "yes": True, "on": True, "0": False,
                                                           "false": False, "no": False, "off": False}[text.lower()]
        elif kind is int:
            value = int(text) if text is not None else value
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError
        elif kind is float:
            value = float(text) if text is not None else value
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError
        elif kind is Path:
            value = Path(value)
        elif kind is Secret:
            value = value if isinstance(value, Secret) else Secret(str(value))
    except (ValueError, KeyError, AttributeError, TypeError):
        raise invalid(item, given, expected(item)) from None
    bounds = item.metadata
    if kind in (int, float) and ((bounds["least"] is not None and value < bounds["least"]) or
                                 (bounds["above"] is not None and value <= bounds["above"]) or
                                 (bounds["most"] is not None and value > bounds["most"])):
        raise invalid(item, given, expected(item))
    return value


def expected(item) -> str:
    """What a field takes, in words ("a whole number, at least 1"; "'faiss' or 'milvus'")."""
    kind = types()[item.name]
    if typing.get_origin(kind) is typing.Union:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is Literal:
        return " or ".join(map(repr, typing.get_args(kind)))
    words = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, "text")
    bounds = item.metadata
    limits = [f"at least {bounds['least']:g}" if bounds["least"] is not None else "",
              f"above {bounds['above']:g}" if bounds["above"] is not None else "",
              f"at most {bounds['most']:g}" if bounds["most"] is not None else ""]
    return ", ".join([words, *filter(None, limits)])


def invalid(item, value: Any, wanted: str) -> SettingsError:
    shown = value if isinstance(value, str) else str(value)
    return SettingsError(f"{variable_of(item)} is {shown!r}: it should be {wanted}",
                         f"unset {variable_of(item)}  # or set it to {wanted}", variable_of(item))


def default_text(item) -> str:
    """A field's default as the docs and --help give it."""
    if item.metadata["shown"] is not None:
        return item.metadata["shown"]
    default = item.default
    return "unset" if default is None else "empty" if default == "" else str(default).lower() \
        if isinstance(default, bool) else f"{default:,}" if isinstance(default, int) and default >= 10_000 else str(default)


def described(name: str) -> str:
    """A flag's help made from the table: its help, the variable and the default, and the value
    the environment gives it here when that differs."""
    item = next(f for f in fields(Settings) if f.name == name)
    default, value = default_text(item), getattr(current(), name)
    here = "" if value == item.default or value is None else f"; {value} here, from the environment"
    return f"{item.metadata['help']} ({variable_of(item)}" + ("" if default == "unset" else f"; default {default}") + \
        here + ")"


_flags: dict[str, Any] = {}
_read: tuple[tuple, Settings] | None = None


def current() -> Settings:
    """This process's settings: the environment's (read again only when a variable of the table
    changes) with the flags given to override() over them. Raises SettingsError naming a bad one."""
    global _read
    key = (tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(PREFIX) or k == "RAY_ADDRESS")),
           tuple(sorted((k, str(v)) for k, v in _flags.items())))
    if _read is None or _read[0] != key:
        _read = (key, Settings.read(**_flags))
    return _read[1]


def override(**flags: Any) -> None:
    """The command line's flags, over the environment for the rest of this process (None: not given)."""
    _flags.clear()
    _flags.update({name: value for name, value in flags.items() if value is not None})


def markdown_table() -> str:
    """The table of docs/operations.md: every setting, by group."""
    rows = ["| variable | type | default | what it does |", "|---|---|---|---|"]
    for group in GROUPS:
        rows.append(f"| **{group}** | | | |")
        for item in fields(Settings):
            if item.metadata["group"] == group:
                rows.append(f"| `{variable_of(item)}` | {expected(item)} | {default_text(item)} | {item.metadata['help']} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())

"""Read articles from a folder (txt, md, html, jsonl) into Documents."""

from __future__ import annotations

import hashlib
import html.parser
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from indexer.errors import DocumentError  # noqa: F401 (raised here; importers name it here)
from indexer.text.metadata import Metadata, front_matter, from_fields, header_lines, json_ld, merged

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".jsonl"}


@dataclass(frozen=True)
class Document:
    """One article: its text is what passage offsets point into."""

    doc_id: str
    title: str
    source: str
    text: str
    metadata: Metadata = Metadata()


def holds_articles(folder: Path) -> bool:
    """Whether folder (or a folder in it) holds files `semsearch index` reads as articles (a README
    that says what the folder is for is not one: the project's own index/ has one)."""
    return any(p.suffix.lower() in SUPPORTED_SUFFIXES and not skipped(p) for p in files_under(Path(folder)))


def files_under(folder: Path) -> list[Path]:
    """The files under folder, sorted. Hidden folders are passed over (.git, an index's unfinished
    writes), and so is a folder removed while it is walked (another process's write finishing):
    walking a folder something else writes to must not fail."""
    found = []
    for top, folders, names in os.walk(folder):  # os.walk passes over folders it cannot list
        folders[:] = [name for name in folders if not name.startswith(".")]
        found.extend(path for name in names if (path := Path(top, name)).is_file())
    return sorted(found)


def skipped(path: Path) -> bool:
    """Files a folder's reading passes over: hidden ones and READMEs."""
    return path.name.startswith(".") or path.name.lower().startswith("readme")


def read_folder(folder: Path) -> Iterator[Document]:
    """Yield every readable document under folder, warning about files that are skipped."""
    folder = Path(folder)
    if folder.is_file():
        raise DocumentError(f"{folder} is a file: give the folder that holds it (every .txt, .md, .html and "
                            ".jsonl file under a folder is indexed)")
    if not folder.is_dir():
        where = "" if folder.is_absolute() else f" (looked for in {Path.cwd()})"
        raise DocumentError(f"folder not found: {folder}{where}; give the folder of articles to index, e.g. "
                            "semsearch index seeds")
    for path in files_under(folder):
        if skipped(path):
            continue
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            log.warning("skipping %s: unsupported file type %r", path, suffix or "(none)")
            continue
        doc_id = path.relative_to(folder).with_suffix("").as_posix()
        # The source users see: the path from the indexed folder's name (seeds/article.txt),
        # never where this machine keeps the folder.
        source = (Path(folder.resolve().name) / path.relative_to(folder)).as_posix()
        try:
            raw = read_text(path)
        except NotText as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        except OSError as exc:
            log.warning("skipping %s: cannot read it (%s)", path, exc)
            continue
        if suffix == ".jsonl":
            yield from parse_jsonl(raw, source)
        elif suffix in {".html", ".htm"}:
            yield parse_html(raw, doc_id, source)
        else:
            yield parse_text(raw, doc_id, source, markdown=suffix in {".md", ".markdown"})


class NotText(OSError):
    """A file whose bytes are not text (an image or archive saved with a text name)."""


def read_text(path: Path) -> str:
    """UTF-8 (a byte-order mark is dropped), else Windows-1252, the usual encoding of older
    scraped pages: a file is never skipped for its encoding, only for holding no text at all
    (NotText: NUL bytes, or more than one control character in ten)."""
    data = path.read_bytes()
    head = data[:8192]
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    if b"\x00" in head or controls * 10 > len(head):
        raise NotText(f"it holds binary data, not text ({controls} control bytes in its first {len(head)})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        log.warning("%s is not UTF-8 (%s); reading it as Windows-1252", path, exc.reason)
        return data.decode("cp1252", errors="replace")


def normalize_newlines(text: str) -> str:
    """Unify line endings so offsets are the same on every platform."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_text(raw: str, doc_id: str, source: str, markdown: bool = False) -> Document:
    """Plain text or Markdown: the first non-empty line is the title. Markdown may open with front
    matter, plain text with `Key: value` metadata lines; either is blanked out of the text (so
    offsets still count from the file's start) and read as the article's metadata."""
    text = normalize_newlines(raw)
    found, end = front_matter(text, source) if markdown else header_lines(text)
    text = re.sub(r"[^\n]", " ", text[:end]) + text[end:]
    first = next((line.strip() for line in text.split("\n") if line.strip()), "")
    title = found.get("title") if isinstance(found.get("title"), str) and found.get("title") else None
    title = title or first.lstrip("#").strip() or doc_id
    return Document(doc_id=doc_id, title=title, source=source, text=text, metadata=from_fields(found, source))


def parse_jsonl(raw: str, source: str) -> Iterator[Document]:
    """One {id, title, url, text} object per line; bad lines are skipped with a warning."""
    for number, line in enumerate(normalize_newlines(raw).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            yield document_from_record(record, default_source=f"{source}:{number}")
        except (json.JSONDecodeError, DocumentError) as exc:
            log.warning("skipping %s line %d: %s", source, number, exc)


def document_from_record(record: object, default_source: str) -> Document:
    """Validate one JSON record into a Document."""
    if not isinstance(record, dict):
        raise DocumentError("expected a JSON object")
    doc_id = record.get("id", record.get("_id"))
    text = record.get("text")
    if not isinstance(doc_id, (str, int)) or str(doc_id).strip() == "":
        raise DocumentError("missing 'id'")
    if not isinstance(text, str) or not text.strip():
        raise DocumentError("missing or empty 'text'")
    title = record.get("title") or ""
    url = record.get("url") or default_source
    if not isinstance(title, str) or not isinstance(url, str):
        raise DocumentError("'title' and 'url' must be strings")
    return Document(doc_id=str(doc_id), title=title.strip(), source=url, text=normalize_newlines(text),
                    metadata=from_fields(record, f"{default_source} ({doc_id})"))


BLOCK_TAGS = {"p", "div", "br", "li", "section", "article", "header", "footer", "tr", "blockquote",
              "h1", "h2", "h3", "h4", "h5", "h6", "title", "pre", "figcaption"}
HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
# Never article text: code, navigation, the page footer, sidebars and buttons (not <form>: some
# sites wrap the whole page in one).
SKIPPED_TAGS = {"script", "style", "noscript", "nav", "template", "svg", "footer", "aside", "button"}


class _TextExtractor(html.parser.HTMLParser):
    """Collects visible text as lines; headings are written as Markdown headings."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip_depth = 0
        self.title = ""
        self.in_title = False
        self.heading = False
        self.meta: dict[str, list[str]] = {}  # <meta property|name=... content=...>, <html lang>
        self.json_ld: list[str] = []  # <script type="application/ld+json"> blocks
        self.in_json_ld = False

    def flush(self) -> None:
        line = re.sub(r"\s+", " ", "".join(self.current)).strip()
        if line:
            self.lines.append(("# " if self.heading else "") + line)
        self.current = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        named = {key: value for key, value in attrs if value is not None}
        if tag == "meta" and named.get("content"):
            key = named.get("property") or named.get("name") or named.get("itemprop")
            if key:
                self.meta.setdefault(key.lower(), []).append(named["content"])
        elif tag == "html" and named.get("lang"):
            self.meta.setdefault("lang", []).append(named["lang"])
        if tag == "script" and named.get("type", "").lower() == "application/ld+json":
            self.in_json_ld = True
            self.json_ld.append("")
        if tag in SKIPPED_TAGS:
            self.skip_depth += 1
        elif tag == "title":
            self.in_title = True
        elif tag in BLOCK_TAGS:
            self.flush()
            self.heading = tag in HEADING_TAGS

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_json_ld = False
        if tag in SKIPPED_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag == "title":
            self.in_title = False
        elif tag in BLOCK_TAGS:
            self.flush()
            self.heading = False

    def handle_data(self, data: str) -> None:
        if self.in_json_ld:
            self.json_ld[-1] += data
        elif self.in_title:
            self.title += data
        elif not self.skip_depth:
            self.current.append(data)


def parse_html(raw: str, doc_id: str, source: str) -> Document:
    """A web page: the article as a reader sees it, found by trafilatura (headings kept as
    Markdown headings, so they become sections), without menus, related links, comments, share
    bars or prompts. Metadata from the page's meta tags and JSON-LD first, then what trafilatura
    and htmldate find (a date written only in the text, the author, the site name). A page where
    no article is found keeps all its visible text, with a warning naming it."""
    parser = read_page(raw)
    metadata = merged(from_fields(parser.meta, source), json_ld(parser.json_ld, source))
    found = article(raw, source)
    if found is None:
        log.warning("%s: no article text found in the page; keeping all its visible text", source)
        text, extra = "\n".join(parser.lines), Extracted()
    else:
        text, extra = found
    title = (extra.title or re.sub(r"\s+", " ", parser.title).strip()
             or next((line.lstrip("# ") for line in parser.lines if line.startswith("# ")), doc_id))
    return Document(doc_id=doc_id, title=title, source=source, text=text, metadata=merged(metadata, extra.metadata))


def read_page(raw: str) -> _TextExtractor:
    """The page's visible lines (headings as Markdown headings), <title>, meta tags and JSON-LD."""
    parser = _TextExtractor()
    parser.feed(raw)
    parser.close()
    parser.flush()
    return parser


def visible_text(raw: str) -> tuple[list[str], str]:
    """Every visible line of a page and its <title>: the whole page, article or not."""
    parser = read_page(raw)
    return parser.lines, re.sub(r"\s+", " ", parser.title).strip()


@dataclass(frozen=True)
class Extracted:
    """What trafilatura found besides the text: the headline and the article's metadata."""

    title: str = ""
    metadata: Metadata = Metadata()


def article(raw: str, source: str) -> tuple[str, Extracted] | None:
    """The article's text as Markdown-style lines (None when trafilatura finds none), and its
    headline and metadata."""
    import trafilatura

    # Its notes (at every level, up to "not valid HTML") name no page; the warning below names it.
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    try:
        # favor_recall: on short pages the default falls back to one flat paragraph, headings lost.
        xml = trafilatura.extract(raw, output_format="xml", include_comments=False, include_tables=True,
                                  favor_recall=True, include_images=False, include_links=False, deduplicate=False)
        lines = xml_lines(xml) if xml else []
        found = trafilatura.extract_metadata(raw)
    except Exception as exc:  # a page trafilatura cannot parse is read the plain way, never lost
        log.warning("%s: the article extractor failed (%s); keeping all its visible text", source, exc)
        return None
    if not lines:
        return None
    fields = {} if found is None else {"published_at": found.date, "authors": found.author, "outlet": found.sitename,
                                        "language": found.language, "tags": found.categories or None}
    extra = Extracted(title=(found.title or "").strip() if found else "",
                      metadata=from_fields({k: v for k, v in fields.items() if v}, source))
    return "\n".join(lines), extra


def xml_lines(xml: str) -> list[str]:
    """trafilatura's XML as this project's lines: a heading as "# heading", each paragraph, list
    item, quote and table row on a line of its own (its XML, unlike its Markdown, escapes nothing
    in the text)."""
    from xml.etree import ElementTree

    def text(node) -> str:
        parts = [node.text or ""]
        for child in node:
            parts += [" " if child.tag == "lb" else text(child), child.tail or ""]
        return " ".join("".join(parts).split())

    lines: list[str] = []

    def walk(node) -> None:
        for child in node:
            if child.tag == "head":
                line = text(child)
                lines.append(f"# {line}" if line else "")
            elif child.tag == "row":
                lines.append(" · ".join(filter(None, (text(cell) for cell in child))))
            elif child.tag in ("p", "item", "quote", "code") and not any(c.tag in BLOCKS for c in child):
                lines.append(text(child))
            else:
                walk(child)

    main = ElementTree.fromstring(xml).find("main")
    if main is not None:
        walk(main)
    return [line for line in lines if line]


BLOCKS = {"head", "p", "list", "item", "table", "row", "quote", "code"}  # in trafilatura's XML


@dataclass(frozen=True)
class StoredDocument:
    """A document as the index recorded it: where it came from and its content hash."""

    document: Document
    origin: str  # "folder" or "api"
    content_hash: str


def content_hash(document: Document) -> str:
    """Changes when anything stored of the document does (metadata only when it has any, so
    documents without it keep the hashes earlier versions gave them)."""
    parts = (document.title, document.source, document.text) + ((document.metadata.to_json(),) if document.metadata else ())
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()

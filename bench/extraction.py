"""How much of what the index keeps from a web page is the article: precision, recall and F1
against the text a reader would call the article, before (all visible text) and after (trafilatura).

    .venv/bin/python bench/extraction.py [--pages tests/extraction/pages --articles tests/extraction/articles]

Each page `NAME.html` has its article in `articles/NAME.txt` (headline, subheadings and paragraphs,
one per line; no captions, credits, menus or prompts). What the index keeps of a page is its
title and the text of its passages (indexer/text/chunking.py, which also drops lines that look like
page furniture), read the way `semsearch index` reads it. Scores are over word tokens (lower
case, multiset overlap), summed over all pages (micro) and per page.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from indexer.text.chunking import chunk_document  # noqa: E402
from indexer.text.documents import Document, parse_html, visible_text  # noqa: E402
from indexer.model.hashing_encoder import HashingEncoder  # noqa: E402

PAGES = ROOT / "tests" / "extraction" / "pages"
ARTICLES = ROOT / "tests" / "extraction" / "articles"


def words(text: str) -> collections.Counter:
    return collections.Counter(re.findall(r"\w+", text.lower()))


def kept(document: Document) -> str:
    """The title and every passage's text: what a search can find of the page."""
    model = HashingEncoder()  # only to cut passages: where they are cut does not change what is kept
    passages = chunk_document(document, model.token_spans, model.max_tokens)
    return "\n".join([document.title, *(p.text for p in passages)])


def before(raw: str, name: str) -> Document:
    """The reader this project used until trafilatura: every visible line, <title> as the title."""
    lines, title = visible_text(raw)
    return Document(doc_id=name, title=title or name, source=name, text="\n".join(lines))


def score(pages: Path, articles: Path) -> dict:
    report: dict = {"pages": 0, "readers": {}}
    for reader, read in (("before", before), ("after", lambda raw, name: parse_html(raw, name, name))):
        overlap = found = wanted = 0
        per_page = {}
        for page in sorted(pages.glob("*.html")):
            gold = words((articles / f"{page.stem}.txt").read_text(encoding="utf-8"))
            ours = words(kept(read(page.read_text(encoding="utf-8"), page.stem)))
            common = sum((ours & gold).values())
            overlap, found, wanted = overlap + common, found + sum(ours.values()), wanted + sum(gold.values())
            per_page[page.stem] = {"precision": round(common / max(sum(ours.values()), 1), 3),
                                   "recall": round(common / max(sum(gold.values()), 1), 3)}
        precision, recall = overlap / max(found, 1), overlap / max(wanted, 1)
        report["pages"] = len(per_page)
        report["readers"][reader] = {"precision": round(precision, 4), "recall": round(recall, 4),
                                     "f1": round(2 * precision * recall / max(precision + recall, 1e-9), 4),
                                     "worst_pages": dict(sorted(per_page.items(), key=lambda kv: min(kv[1].values()))[:5])}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, default=PAGES)
    parser.add_argument("--articles", type=Path, default=ARTICLES)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    emit(score(args.pages, args.articles), args.json)


if __name__ == "__main__":
    main()

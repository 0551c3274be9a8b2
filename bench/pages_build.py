"""A whole `semsearch index` of a folder of 1,000 news pages against the same articles as plain
text, in one run: what reading web pages (trafilatura) adds to a build.

    .venv/bin/python bench/pages_build.py [--pages 1000]

The pages are tests/extraction's 25, each copied 40 times with a copy number written into every
paragraph, so no passage repeats and nothing comes from the embedding cache. The text folder
holds each page's article (tests/extraction/articles) with the same numbers. Each build runs in a
fresh process into an empty index folder, at this machine's default precision.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.extraction import ARTICLES, PAGES  # noqa: E402
from bench.report import emit  # noqa: E402

SEMSEARCH = Path(sys.executable).with_name("semsearch")


def numbered(text: str, copy: int, paragraph: str) -> str:
    """Each paragraph (as the pattern finds them) with the copy number written into it."""
    return re.sub(paragraph, lambda m: f"{m.group(1)}Report {copy}: {m.group(2)}", text)


def write_folders(scratch: Path, count: int) -> tuple[Path, Path]:
    pages, texts = scratch / "pages", scratch / "texts"
    pages.mkdir()
    texts.mkdir()
    sources = sorted(PAGES.glob("*.html"))
    for n in range(count):
        page = sources[n % len(sources)]
        copy = n // len(sources)
        (pages / f"{page.stem}-{copy}.html").write_text(
            numbered(page.read_text(encoding="utf-8"), copy, r"(<(?:p|div)(?: class=\"(?:para|text)\")?>)([A-Z\"])"),
            encoding="utf-8")
        lines = (ARTICLES / f"{page.stem}.txt").read_text(encoding="utf-8").splitlines()
        body = [lines[0]] + [f"Report {copy}: {line}" if line.endswith((".", '"')) else line for line in lines[1:]]
        (texts / f"{page.stem}-{copy}.txt").write_text("\n\n".join(body) + "\n", encoding="utf-8")
    return pages, texts


def build(folder: Path, out: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run([str(SEMSEARCH), "index", str(folder), "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    seconds = time.perf_counter() - started
    passages = int(re.search(r"embedded (\d+) of", done.stdout).group(1))
    return {"seconds": round(seconds, 1), "passages": passages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="semsearch-pages-") as scratch:
        pages, texts = write_folders(Path(scratch), args.pages)
        report = {"pages": args.pages, "html": build(pages, Path(scratch) / "index-html"),
                  "text": build(texts, Path(scratch) / "index-text")}
    emit(report, args.json)


if __name__ == "__main__":
    main()

"""Peak memory of one feed poll (`semsearch follow --once`) as the number of large pages grows.

    .venv/bin/python bench/feed_memory.py --pages 20 80 --baseline ../semsearch-before

A local site (127.0.0.1) serves a feed of N item pages of about 1 MB each (inline scripts and
navigation around a 20,000-character article, as heavy news pages are). The poll runs in a fresh
process with the stand-in encoder (the fetch and write machinery is under test, not the model);
its peak resident memory is read from the kernel (wait4's ru_maxrss). Each poll runs twice: the
second fetches and reads every page again but has nothing to write, so it shows what the index of
that size costs to open and check, apart from the writing. --baseline runs the same
polls with another checkout's code (for example `git worktree add ../semsearch-before HEAD~3`),
in the same run, for comparison.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402
from tests.sites import Site  # noqa: E402

WORDS = ("the harbour board said on friday that dredging of the outer channel would start in spring after "
         "two years of talks with shipping lines and the river authority over costs").split()


def heavy_page(number: int) -> str:
    """About 1 MB: an article of some 20,000 characters inside inline scripts and menus."""
    article = "".join(f"<p>Page {number}, paragraph {p}: " + " ".join(WORDS[(p + i) % len(WORDS)] for i in range(60))
                      + ".</p>" for p in range(50))
    script = "<script>var state = " + repr(list(range(120_000))) + ";</script>"
    nav = "<nav>" + "".join(f"<a href='/s{i}'>Section {i}</a>" for i in range(2000)) + "</nav>"
    return f"<html><head><title>Report {number}</title>{script}</head><body>{nav}<article><h1>Report {number}</h1>" \
           f"{article}</article></body></html>"


# The poll is started by a small Python process that reports its child's peak: a child forked
# from this one would count this process's memory (the pages it serves) as its own high-water mark.
MEASURE = """import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(f"peak-kb {usage.ru_maxrss}")
"""


def served_page(number: int):
    return served(lambda: heavy_page(number).encode(), "text/html; charset=utf-8")


def served(make, kind: str):
    """A response without validators: every poll fetches and reads it again."""
    def answer(handler) -> None:
        body = make()
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return answer


def peak_of_poll(code: Path, feed: str, index: Path) -> tuple[float, float, str]:
    """(peak resident MB, seconds, last output line) of one `follow --once` run from `code`."""
    env = {**os.environ, "SEMSEARCH_MODEL_PATH": "hashing", "SEMSEARCH_FEED_HOST_DELAY": "0",
           "PYTHONPATH": str(code)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "indexer.cli", "follow", feed,
                           "--index", str(index), "--once"], cwd=code, env=env, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    peak = next(int(line.split()[1]) for line in lines if line.startswith("peak-kb "))
    said = [line for line in done.stdout.splitlines() if not line.startswith("peak-kb ")]
    return peak / 1024, time.monotonic() - started, said[-1] if said else lines[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--baseline", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    site = Site()
    page_bytes = len(heavy_page(0).encode())
    for number in range(max(args.pages)):  # made when asked for: this process stays small
        site.serve(f"/p{number}", served_page(number))
    rows = []
    for pages in args.pages:
        items = "".join(f"<item><title>R{n}</title><link>{site.url}/p{n}</link></item>" for n in range(pages))
        feed = f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>{items}</channel></rss>'.encode()
        site.serve(f"/feed{pages}.xml", served(lambda feed=feed: feed, "application/rss+xml"))
        for name, code in (("this checkout", ROOT), ("baseline", args.baseline)):
            if code is None:
                continue
            with tempfile.TemporaryDirectory() as work:
                for poll in ("first", "again"):  # again: every page fetched and read, nothing to write
                    peak, seconds, said = peak_of_poll(code, f"{site.url}/feed{pages}.xml", Path(work) / "index")
                    rows.append({"code": name, "pages": pages, "poll": poll, "page_mb": round(page_bytes / 1e6, 2),
                                 "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1), "said": said})
                    print(f"{name:14} {pages:4d} pages of {page_bytes / 1e6:.2f} MB, {poll} poll: peak {peak:7.1f} MB, "
                          f"{seconds:5.1f} s ({said})", flush=True)
    site.close()
    emit({"polls": rows}, args.json)


if __name__ == "__main__":
    main()

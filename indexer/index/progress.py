"""Progress of a long build: on a terminal a bar (documents done of the total, passages embedded,
passages/s, time left); otherwise a log line at least every LOG_EVERY seconds, so
a build in CI or under a supervisor is never silent for minutes."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("semsearch.build")
LOG_EVERY = 10.0  # seconds between log lines when the output is not a terminal


def count(number: int, noun: str) -> str:
    """`1 feed`, `2 feeds`, `1480 passages` (plain digits, as the other figures on the line)."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


class BuildProgress:
    """show: True a bar, False nothing, None a bar on a terminal and log lines elsewhere."""

    def __init__(self, documents: int, show: bool | None = None) -> None:
        from tqdm import tqdm

        self.total, self.done, self.embedded = documents, 0, 0
        self.to_embed = 0  # passages known to need a vector (known a batch at a time)
        self.batch = (0, 0, 0, 0)  # the current batch: documents done before it, its documents,
        # passages embedded before it, its passages to embed
        self.started = self.logged = time.monotonic()
        terminal = sys.stderr.isatty()
        self.logging = show is None and not terminal and documents > 0
        self.bar = tqdm(total=documents, unit="doc", desc="indexing", dynamic_ncols=True, leave=False,
                        disable=not (show if show is not None else terminal))

    def expect(self, documents: int, passages: int) -> None:
        """A batch of documents begins, of which passages will be embedded."""
        self.batch = (self.done, documents, self.embedded, passages)
        self.to_embed += passages

    def advance(self, documents: int = 0, passages: int = 0) -> None:
        """documents more are done, passages more were embedded."""
        self.done += documents
        self.embedded += passages
        rate = self.embedded / max(time.monotonic() - self.started, 1e-9)
        # Passages to embed are known a batch at a time, so no total is shown for them (it would
        # grow as the build goes, and differ from the final count, which includes reused vectors).
        embedded = f"{self.embedded:,} passages embedded"
        self.bar.set_postfix_str(f"{embedded}, {rate:,.0f}/s", refresh=False)
        self.bar.update(documents)
        now = time.monotonic()
        if self.logging and now - self.logged >= LOG_EVERY:
            self.logged = now
            log.info("indexing: %s of %s documents, %s (%.0f/s), %s", f"{self.done:,}", f"{self.total:,}",
                     embedded, rate, self.left(now))

    def left(self, now: float) -> str:
        """From the documents done, counting the current batch's by its share of passages embedded
        (a Ray build finishes its documents out of order, so few are whole until the end)."""
        before, documents, embedded_before, passages = self.batch
        within = (self.embedded - embedded_before) / passages if passages else 0.0
        done = max(self.done, before + documents * within)
        if not done:
            return "time left not known yet"
        seconds = (now - self.started) / done * (self.total - done)
        return f"about {seconds / 60:.0f} min left" if seconds >= 90 else f"about {seconds:.0f} s left"

    def close(self) -> None:
        self.bar.close()

"""How every bench script hands over its figures: printed as JSON, and written to --json if given."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(report: dict, path: Path | None) -> None:
    """Write the figures to path (folders made as needed); nothing when path is None."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))


def emit(report: dict, path: Path | None) -> None:
    """Print the figures and write them to path."""
    print(json.dumps(report, indent=2))
    write_report(report, path)

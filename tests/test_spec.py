"""The OpenAPI spec matches the service: schemathesis (`schemathesis run URL/openapi.json`, its
default checks) fuzzes a running server with and without the API key and finds no failure.

Bounded by cases, not time, so that a busy machine checks as much as an idle one: schemathesis's
coverage phase (every schema boundary, about 800 cases) and SEMSEARCH_FUZZ_EXAMPLES random cases an
operation (default 20) in its fuzzing phase. Without the key only the operations that need one are
run: the others are the same requests with or without it. tests/schemathesis.toml says why
413 is an expected answer; tests/schemathesis_hooks.py why cases needing a null or an object in a
query string are left out. The stand-in encoder: only the HTTP edge is under test here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MILVUS_SLOW, STAND_IN, served

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("SEMSEARCH_FUZZ_EXAMPLES", "20"))
# A fixed seed, so a CI failure can be replayed (`random` explores new cases). Two random-seed CI
# runs of 4.32.5 reported a valid request as schema-violating; the one whose details were kept is
# the serialization case tests/schemathesis_hooks.py now leaves out.
SEED = os.environ.get("SEMSEARCH_FUZZ_SEED", "20261127")
KEY = "fuzzing-key"


@MILVUS_SLOW  # on Milvus Lite, whose writes take seconds, the run takes about a minute
@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "without-key"])
def test_fuzzing_the_spec_finds_no_failure(folder_index, tmp_path, with_key):
    _, index = folder_index
    with served(index, {**STAND_IN, "SEMSEARCH_API_KEY": KEY}) as (process, url):
        # One worker: with two, hypothesis reads lambda sources with Python's ast in both threads at
        # once, and on 3.11 that failed at random ("AST constructor recursion depth mismatch").
        command = [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
                   "--max-examples", str(EXAMPLES), "--workers", "1", "--request-timeout", "30", "--no-color"]
        if SEED != "random":
            command += ["--seed", SEED]
        if with_key:
            command += ["--header", f"Authorization: Bearer {KEY}"]
        else:
            command += ["--include-path-regex", "^/(documents|admin)"]  # what answers 401 without it
        hooks = {"SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(CONFIG.parent.parent)}
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                             env={**os.environ, **hooks})
        server_log = Path(process.log_path).read_text()
        failures = run.stdout.find("FAILURES")  # the failures themselves, not only the summary after them
        assert run.returncode == 0, run.stdout[max(failures, 0):][:8000] + run.stderr[-2000:]
        generated = re.search(r"(\d+) generated", run.stdout)
        assert generated and int(generated.group(1)) >= 100, run.stdout[-2000:]  # it did fuzz
        assert process.poll() is None  # still serving
        assert '"level": "error"' not in server_log, server_log[-4000:]

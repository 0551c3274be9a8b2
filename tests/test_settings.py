"""One settings table (indexer/settings.py): read once from the environment, flags over it without
touching os.environ, every value checked, and the docs' table and --help made from it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from indexer.settings import Secret, Settings, SettingsError, current, markdown_table, override
from tests.conftest import ROOT, semsearch


def test_the_operations_docs_table_is_the_settings_table():
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- settings:[^\n]*-->\n(.*?)<!-- end of settings -->", text, re.S)
    assert block and block.group(1) == markdown_table(), "run: .venv/bin/python -m indexer.settings"


def test_only_the_settings_module_reads_the_environment():
    """No other module reads os.environ for a value (setting a library's own knob is allowed)."""
    reads = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[|environ\.get\(\"SEMSEARCH")
    readers = [str(p.relative_to(ROOT)) for p in [*(ROOT / "indexer").rglob("*.py"), *(ROOT / "service").glob("*.py")]
               if p.name != "settings.py" and reads.search(p.read_text(encoding="utf-8"))]
    assert readers == []


def test_values_are_parsed_by_type_and_checked_against_their_bounds():
    read = Settings.read({"SEMSEARCH_MERGE": "off", "SEMSEARCH_RRF_K": " 7 ", "SEMSEARCH_BODY_TIMEOUT": "2.5",
                          "SEMSEARCH_INDEX_DIR": "/srv/news-index", "SEMSEARCH_API_KEY": "k3y",
                          "SEMSEARCH_ENGINE": "", "RAY_ADDRESS": "10.0.0.5:6379"})
    assert (read.merge, read.rrf_k, read.body_timeout, read.index_dir) == (False, 7, 2.5, Path("/srv/news-index"))
    assert read.engine is None and read.ray_address == "10.0.0.5:6379"  # empty counts as unset
    assert read.api_key.get_secret_value() == "k3y" and "k3y" not in repr(read)
    assert Settings(api_key="k").api_key == Secret("k")
    for variable, value, said in [("SEMSEARCH_RRF_K", "0", "it should be a whole number, at least 1"),
                                  ("SEMSEARCH_PORT", "70000", "at most 65535"),
                                  ("SEMSEARCH_MERGE", "maybe", "it should be true or false"),
                                  ("SEMSEARCH_BODY_TIMEOUT", "0", "it should be a number, above 0"),
                                  ("SEMSEARCH_FEED_TIMEOUT", "nan", "it should be a number"),
                                  ("SEMSEARCH_RELOAD_INTERVAL", "inf", "it should be a number"),
                                  ("SEMSEARCH_FUSION_METHOD", "magic", "'relevance' or 'rrf' or 'convex'"),
                                  ("SEMSEARCH_LOG_LEVEL", "loud", "'debug' or 'info' or 'warning' or 'error'")]:
        with pytest.raises(SettingsError) as refused:
            Settings.read({variable: value})
        assert str(refused.value).startswith(f"{variable} is {value!r}: ") and said in str(refused.value)
        assert refused.value.fix.startswith(f"unset {variable}  # or set it to")
    with pytest.raises(SettingsError) as both:
        Settings.read({"SEMSEARCH_RRF_K": "x", "SEMSEARCH_PORT": "y"})
    assert "SEMSEARCH_RRF_K" in str(both.value) and both.value.fix.startswith("unset SEMSEARCH_RRF_K SEMSEARCH_PORT")


def test_flags_stand_over_the_environment_without_being_written_into_it(monkeypatch):
    monkeypatch.setenv("SEMSEARCH_ENGINE", "faiss")
    try:
        override(engine="milvus", milvus_uri=None)
        assert current().engine == "milvus" and os.environ["SEMSEARCH_ENGINE"] == "faiss"
        monkeypatch.setenv("SEMSEARCH_RRF_K", "9")  # read again when a variable changes
        assert current().rrf_k == 9 and current().engine == "milvus"
    finally:
        override()
    assert current().engine == "faiss"


def test_a_bad_setting_stops_any_command_with_its_name_and_the_line_that_undoes_it(tmp_path):
    done = semsearch("show", "--index", str(tmp_path / "none"), env={"SEMSEARCH_MAX_BODY_BYTES": "lots"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == ["semsearch: error: SEMSEARCH_MAX_BODY_BYTES is 'lots': it should be a whole "
                                        "number, at least 1024",
                                        "  fix: unset SEMSEARCH_MAX_BODY_BYTES  # or set it to a whole number, at "
                                        "least 1024"]


def test_help_takes_its_words_and_defaults_from_the_table():
    shown = semsearch("serve", "--help", env={"SEMSEARCH_PORT": "8123"}).stdout
    flat = " ".join(shown.split())
    assert "port `semsearch serve` listens on (SEMSEARCH_PORT; default 8000; 8123 here, from the environment)" in flat
    assert "(SEMSEARCH_HOST; default 127.0.0.1)" in flat

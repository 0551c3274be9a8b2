"""The command line: main.py parses the arguments and turns errors into a message and a fix,
commands.py does what each command does, client.py asks a running server (`search --url`).
The core never imports this package (tests/test_layers.py)."""

from indexer.cli.main import main, parser  # noqa: F401 (the entry point, and what tests name)

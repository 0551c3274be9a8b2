"""`python -m indexer.cli`: the `semsearch` command."""

import sys

from indexer.cli.main import main

sys.exit(main())

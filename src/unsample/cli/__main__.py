"""``python -m unsample.cli``: the command line (``unsample batch --processes`` starts its shards so)."""

import sys

from unsample.cli import main

sys.exit(main())

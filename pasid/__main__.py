"""``python -m pasid``: the same as the ``pasid`` command."""

import sys

from pasid.cli import main

sys.exit(main())

"""``python -m pasid``: the same as the ``pasid`` command."""

import sys

from pasid.cli import main

if __name__ == "__main__":     # importing the module (type checkers, stubtest) runs nothing
    sys.exit(main())

"""The documented CLI, ``python -m pg_dataops.catalog_rebuild``: the code is ``pg_dataops.catalog.rebuild``."""

import sys

from pg_dataops.catalog.rebuild import main

if __name__ == "__main__":
    sys.exit(main())

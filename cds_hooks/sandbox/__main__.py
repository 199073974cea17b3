"""``python -m cds_hooks.sandbox``: the same as ``cramp-cds sandbox``."""
import sys

from cds_hooks.sandbox.cli import main

sys.exit(main())

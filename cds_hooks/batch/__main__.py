"""`python -m cds_hooks.batch INPUT…`: the batch review without the `cramp-cds` entry point."""
import sys

from cds_hooks.batch.cli import main

if __name__ == "__main__":
    sys.exit(main())

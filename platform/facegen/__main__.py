"""`python -m facegen …`: the command line (facegen/cli.py)."""
import sys

from facegen.cli import main

if __name__ == "__main__":
    sys.exit(main())

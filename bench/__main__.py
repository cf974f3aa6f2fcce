"""``python -m bench``: run the benchmark scenarios and print the table."""

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())

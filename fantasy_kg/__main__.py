"""Allow ``python -m fantasy_kg`` as a twin of the ``fantasy-kg`` console script."""

from fantasy_kg.cli.main import main

if __name__ == "__main__":
    main()

"""`python -m klaudio` runs the CLI."""

from klaudio.cli.main import main

main()

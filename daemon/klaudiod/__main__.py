"""`python -m klaudiod` runs the daemon in the foreground."""

from klaudiod.main import main

main()

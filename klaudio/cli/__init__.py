"""The klaudio command-line interface."""

"""klaudio: run teams of Claude Code agents in Docker containers."""

__version__ = "0.1.0"

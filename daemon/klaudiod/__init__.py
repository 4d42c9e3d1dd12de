"""klaudiod: the klaudio daemon (agent pool, scheduler, store, gRPC API)."""

from klaudio import __version__

__all__ = ["__version__"]

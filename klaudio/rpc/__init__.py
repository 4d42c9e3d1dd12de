"""The wire contract's shared constants; the generated stubs live in v1/."""

# The metadata key every call carries the per-user daemon token in.
TOKEN_METADATA = "x-klaudio-token"

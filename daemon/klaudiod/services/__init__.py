"""gRPC servicers: proto <-> domain conversion only; the rules live in the scheduler."""

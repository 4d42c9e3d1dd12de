"""The gRPC server on the user's Unix socket (0700 dir, 0600 socket), checking the token."""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from klaudio import validate
from klaudio.paths import Paths, check_socket, ensure_private_dir
from klaudio.rpc import TOKEN_METADATA
from klaudio.rpc.v1 import (
    checkpoints_pb2_grpc,
    daemon_pb2_grpc,
    files_pb2_grpc,
    images_pb2_grpc,
    plans_pb2_grpc,
    repos_pb2_grpc,
    stream_pb2_grpc,
    tasks_pb2_grpc,
    teams_pb2_grpc,
)

# Far above the largest request the CLI sends (a prompt of at most MAX_PROMPT_BYTES, a name and
# a repo), so a valid request always reaches the checks that name what is wrong with it.
MAX_RECEIVE_BYTES = 4 * validate.MAX_PROMPT_BYTES


def ensure_token(path: Path) -> str:
    """Read the per-user secret, creating it (0600) on first use."""
    ensure_private_dir(path.parent)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses every call that does not carry this user's token, and malformed requests."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        metadata = dict(details.invocation_metadata or ())
        given = str(metadata.get(TOKEN_METADATA, "")).encode()
        if handler is None:
            return handler
        if hmac.compare_digest(given, self._token):
            return _parsing(handler)
        return _refusal(handler)


def _parsing(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler, parsing its request itself so that a malformed one is INVALID_ARGUMENT.

    gRPC's own parsing answers UNKNOWN with a Python exception's name, for example for a
    string field that is not valid UTF-8.
    """
    parse = handler.request_deserializer
    if parse is None:
        return handler
    # grpc's stubs type the behaviours for the sync server; these are the aio servicer's.
    call: Any = handler.unary_unary
    follow: Any = handler.unary_stream

    async def request(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return parse(raw)
        except Exception as exc:  # protobuf's DecodeError
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {exc}")

    async def unary(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await call(await request(raw, context), context)

    async def stream(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async for item in follow(await request(raw, context), context):
            yield item

    if call:
        return grpc.unary_unary_rpc_method_handler(unary, None, handler.response_serializer)
    if follow:
        return grpc.unary_stream_rpc_method_handler(stream, None, handler.response_serializer)
    return handler


def _refusal(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    message = "missing or wrong daemon token (the token file is readable by its owner only)"

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    # The request is never parsed: a caller without the token learns nothing about it.
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream, None, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(unary, None, handler.response_serializer)


async def start(paths: Paths, token: str, servicers: dict[str, Any]) -> grpc.aio.Server:
    """Start serving the servicers on the instance's socket and return the server.

    Raises:
        InvalidArgument: when the socket's path is too long for a Unix socket.
    """
    check_socket(paths)
    ensure_private_dir(paths.runtime_dir)
    paths.socket.unlink(missing_ok=True)
    server = grpc.aio.server(
        interceptors=[TokenInterceptor(token)],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(servicers["tasks"], server)
    stream_pb2_grpc.add_StreamServiceServicer_to_server(servicers["stream"], server)
    daemon_pb2_grpc.add_DaemonServiceServicer_to_server(servicers["daemon"], server)
    images_pb2_grpc.add_ImageServiceServicer_to_server(servicers["images"], server)
    checkpoints_pb2_grpc.add_CheckpointServiceServicer_to_server(servicers["checkpoints"], server)
    plans_pb2_grpc.add_PlanServiceServicer_to_server(servicers["plans"], server)
    teams_pb2_grpc.add_TeamServiceServicer_to_server(servicers["teams"], server)
    repos_pb2_grpc.add_RepoServiceServicer_to_server(servicers["repos"], server)
    files_pb2_grpc.add_FileServiceServicer_to_server(servicers["files"], server)
    server.add_insecure_port(f"unix:{paths.socket}")
    await server.start()
    os.chmod(paths.socket, 0o600)
    return server

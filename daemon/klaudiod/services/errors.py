"""klaudio errors -> gRPC status codes, mapped once for every servicer method."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from klaudio import errors

log = logging.getLogger(__name__)

CODES: dict[type[errors.KlaudioError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Timeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

F = TypeVar("F", bound=Callable[..., Any])


def code_for(exc: errors.KlaudioError) -> grpc.StatusCode:
    """The status code for a klaudio error (INTERNAL for anything unmapped)."""
    for kind in type(exc).__mro__:
        if kind in CODES:
            return CODES[kind]
    return grpc.StatusCode.INTERNAL


def message(exc: errors.KlaudioError) -> str:
    """The status message: one line, or a summary and one problem per line.

    The second is for errors that list problems: a plan, a team file.
    """
    problems = getattr(exc, "problems", None)
    if isinstance(problems, list) and len(problems) > 1:
        return "\n".join([str(exc).split(":", 1)[0] + ":", *(f"- {p}" for p in problems)])
    return str(exc)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    if isinstance(exc, errors.KlaudioError):
        await context.abort(code_for(exc), message(exc))
    log.exception("internal error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}; see the daemon log")


def mapped(method: F) -> F:
    """Wrap a servicer method (unary or server-streaming) so errors become status codes."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except (errors.KlaudioError, Exception) as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await _abort(context, exc)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await _abort(context, exc)

    return unary  # type: ignore[return-value]

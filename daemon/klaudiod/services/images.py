"""ImageService: build the agent image, streaming the build's output."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc

from klaudio.config import Config
from klaudio.rpc.v1 import images_pb2, images_pb2_grpc
from klaudiod import image
from klaudiod.runtime import Runtime
from klaudiod.services.errors import mapped

Context = grpc.aio.ServicerContext[Any, Any]
_DONE = object()


class ImageService(images_pb2_grpc.ImageServiceServicer):
    """Builds the agent image from the files shipped with klaudio."""

    def __init__(self, config: Config, runtime: Runtime) -> None:
        self._config = config
        self._runtime = runtime

    @mapped
    async def BuildImage(
        self, request: images_pb2.BuildImageRequest, context: Context
    ) -> AsyncIterator[images_pb2.BuildImageResponse]:
        tag = request.tag or self._config.docker.image
        base = request.base_image or self._config.docker.base_image
        ca = request.extra_ca_file or self._config.docker.extra_ca_file
        current = await asyncio.to_thread(image.is_current, self._runtime, tag, base, ca)
        if current and not request.force:
            yield images_pb2.BuildImageResponse(line=f"{tag} is up to date", tag=tag, image_id=tag)
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def build() -> None:
            try:
                for line in image.build(self._runtime, tag, base, ca):
                    loop.call_soon_threadsafe(queue.put_nowait, line)
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)
            except Exception as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        threading.Thread(target=build, name="klaudio-image-build", daemon=True).start()
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield images_pb2.BuildImageResponse(line=item)
        yield images_pb2.BuildImageResponse(line=f"built {tag}", tag=tag, image_id=tag)

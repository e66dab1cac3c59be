"""Request bodies read with a ceiling: every HTTP service refuses a body that is too large as soon
as it knows (its Content-Length, or the bytes streamed so far), never after holding all of it."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """A request body over the limit; the message says how large and what the limit is."""


async def read_body(request: Request, limit: int, what: str = "the request body") -> bytes:
    """The body of ``request``, or :class:`BodyTooLarge` once it is known to exceed ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"{what} is {int(declared)} bytes; at most {limit} are accepted")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise BodyTooLarge(f"{what} is over {limit} bytes; at most {limit} are accepted")
    return bytes(received)

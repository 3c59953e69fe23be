"""Downloads produced whole before the first byte is sent, so a failure is a 503, never a cut-off file."""

from __future__ import annotations

import asyncio
import errno
import io
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from typing import IO, Any, TextIO

from fastapi import HTTPException
from fastapi.responses import StreamingResponse

SPOOL_MEMORY_BYTES = 4 * 2**20  # kept in memory up to this size, then in a temporary file
CHUNK_BYTES = 64 * 1024


def _write_pieces(produce: Callable[[], Iterable[str]]) -> Callable[[TextIO], None]:
    """A writer of every piece `produce` yields."""
    def write(out: TextIO) -> None:
        for piece in produce():
            out.write(piece)
    return write


def _spool(write: Callable[[TextIO], Any]) -> IO[bytes]:
    """What `write` writes to a text file (UTF-8, newline=""), in a file rewound to its start (closed
    again on failure)."""
    spooled: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 (closed by _chunks)
    try:
        text = io.TextIOWrapper(spooled, encoding="utf-8", newline="")
        write(text)
        text.flush()
        text.detach()
        spooled.seek(0)
    except BaseException as exc:
        spooled.close()
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HTTPException(507, f"the server's disk is full: the download could not be prepared in "
                                     f"{tempfile.gettempdir()} ({exc.strerror})") from None
        raise
    return spooled


async def _chunks(spooled: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(spooled.read, CHUNK_BYTES):
            yield chunk
    finally:
        spooled.close()


async def spooled_download(produce: Callable[[], Iterable[str]], media_type: str, filename: str) -> StreamingResponse:
    """Run `produce` to the end in a thread, then stream what it made with its length; its errors
    (a database that cannot be read, say) raise here, before any answer has begun."""
    return await spooled_file_download(_write_pieces(produce), media_type, filename)


async def spooled_file_download(write: Callable[[TextIO], Any], media_type: str, filename: str) -> StreamingResponse:
    """As `spooled_download`, for a `write` that writes the whole download into the text file it is given."""
    spooled = await asyncio.to_thread(_spool, write)
    size = spooled.seek(0, 2)
    spooled.seek(0)
    return StreamingResponse(_chunks(spooled), media_type=media_type,
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Content-Length": str(size)})

"""A gzip or deflate Content-Encoding undone a bounded piece at a time, so a size cap counts decoded bytes.

The bridge asks upstreams for ``Accept-Encoding: gzip, deflate`` and sends its client the plain body
(it drops Content-Encoding), so it decodes while it reads: ``decoder_for`` gives a function that
returns at most ``limit`` bytes of output per piece and raises ``http1.Overflow`` past it, so a small
bomb cannot balloon. Any other coding is refused (``DecodeError``), never passed on undecoded.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from .http1 import Overflow


class DecodeError(ValueError):
    """The body does not decode as its Content-Encoding says, or names one the bridge cannot undo."""



Decoder = Callable[[bytes, int], bytes]



def decoder_for(content_encoding: str | None) -> Decoder | None:
    """A decoder for the body, or None when it is not encoded. ``decode(data, limit)`` returns at
    most ``limit`` bytes of output and raises ``Overflow`` when ``data`` holds more than that;
    ``decode(b"", limit)`` at the end returns what is left. Raises DecodeError for an encoding the
    bridge never asks for (it sends ``Accept-Encoding: gzip, deflate``) or a list of several."""
    coding = (content_encoding or "").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return _ZlibDecoder(16 + zlib.MAX_WBITS).decode
    if coding == "deflate":
        return _ZlibDecoder(zlib.MAX_WBITS, raw_fallback=True).decode
    raise DecodeError(f"a Content-Encoding the bridge does not undo ({coding[:40]!r})")



class _ZlibDecoder:
    def __init__(self, wbits: int, raw_fallback: bool = False) -> None:
        self._wbits = wbits
        self._object = zlib.decompressobj(wbits)
        # RFC 9110 "deflate" is the zlib format, but servers have long sent raw deflate: like
        # browsers (and urllib3), try zlib first and fall back to raw on the first bytes only.
        self._raw_fallback = raw_fallback
        self._started = False

    def decode(self, data: bytes, limit: int) -> bytes:
        try:
            return self._decode(data, limit)
        except zlib.error:
            raise DecodeError("the body does not decode as its Content-Encoding says") from None

    def _decode(self, data: bytes, limit: int) -> bytes:
        if not data:
            return self._object.flush() if not self._object.eof else b""
        if self._raw_fallback and not self._started:
            self._started = True
            try:
                return self._bounded(data, limit)
            except zlib.error:
                self._object = zlib.decompressobj(-zlib.MAX_WBITS)
        out = self._bounded(data, limit)
        # gzip allows several members one after another (RFC 1952 section 2.2).
        while self._object.eof and self._object.unused_data and self._wbits > zlib.MAX_WBITS:
            rest = self._object.unused_data
            self._object = zlib.decompressobj(self._wbits)
            out += self._bounded(rest, limit - len(out))
        return out

    def _bounded(self, data: bytes, limit: int) -> bytes:
        out = self._object.decompress(data, max(limit, 0) + 1)
        if len(out) > limit or self._object.unconsumed_tail:
            raise Overflow
        return out

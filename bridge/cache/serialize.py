"""An entry as bytes, and back: the fields of a Redis hash, or one framed string for the worker handoff.

``entry_fields`` gives an entry's fields (``m`` metadata as JSON, ``b`` the body, ``j`` the script
JSON once made, ``t`` the time it was stored, which names this version of it); ``entry_from_fields``
reads them back, or None for fields past their retention by the bridge's clock, half-written or
foreign. ``entry_to_bytes`` frames the same fields as one string. No I/O: the stores move the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..upstream.message import UpstreamResponse
from .entry import CacheEntry, new_entry


def entry_fields(entry: CacheEntry) -> dict[str, bytes]:
    meta = {"s": entry.response.status, "h": entry.response.headers, "t": entry.stored_at,
            "l": entry.lifetime, "a": entry.initial_age, "v": entry.vary, "r": entry.retain_until,
            "ad": entry.address, "tg": entry.tags}
    fields = {"m": json.dumps(meta, separators=(",", ":")).encode(), "b": entry.response.body,
              "t": repr(entry.stored_at).encode()}
    if entry.script_json is not None:
        fields["j"] = entry.script_json.encode()
    return fields


def entry_from_fields(key: str, fields: Mapping[bytes, bytes], now: float) -> CacheEntry | None:
    """The entry of these fields, reading the metadata once; None past its retention or for fields
    that are not an entry."""
    try:
        meta = json.loads(fields[b"m"])
        retain_until = float(meta["r"])
        if retain_until <= now:
            return None
        response = UpstreamResponse(int(meta["s"]), tuple((str(k), str(v)) for k, v in meta["h"]),
                                    fields[b"b"])
        script_json = fields[b"j"].decode() if b"j" in fields else None
        api, path, query = (str(part) for part in meta.get("ad", ("", "", "")))
        entry = new_entry(key, response, float(meta["t"]), int(meta["l"]), tuple(meta["v"]),
                          script_json, retain_until, (api, path, query),
                          tuple(str(tag) for tag in meta.get("tg", ())))
        entry.initial_age = int(meta["a"])
        return entry
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        return None


def entry_meta(meta: bytes) -> tuple[tuple[str, str, str], tuple[str, ...]] | None:
    """An entry's address and tags from its metadata field alone (what a purge matches), or None."""
    try:
        record = json.loads(meta)
        api, path, query = (str(part) for part in record.get("ad", ("", "", "")))
        return (api, path, query), tuple(str(tag) for tag in record.get("tg", ()))
    except (ValueError, TypeError, AttributeError):
        return None


def entry_to_bytes(entry: CacheEntry) -> bytes:
    """An entry as one byte string (its fields, framed), for the worker handoff."""
    fields = entry_fields(entry)
    head = json.dumps([[name, len(value)] for name, value in fields.items()]).encode()
    return head + b"\n" + b"".join(fields.values())


def entry_from_bytes(key: str, data: bytes, now: float) -> CacheEntry | None:
    """The entry of ``entry_to_bytes``, or None for one past its retention or not an entry."""
    head, _, rest = data.partition(b"\n")
    try:
        fields: dict[bytes, bytes] = {}
        offset = 0
        for name, length in json.loads(head):
            fields[str(name).encode()] = rest[offset:offset + int(length)]
            offset += int(length)
    except (ValueError, TypeError):
        return None
    return entry_from_fields(key, fields, now)

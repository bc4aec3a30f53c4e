"""RFC 9211 ``Cache-Status``: what the bridge's cache did for one answer, as data that renders itself.

``CacheStatus`` is made by the gateway and read by whoever needs a part of it: the answer carries
``str(status)`` as the bridge's member of the ``Cache-Status`` field (after the upstream's own, as RFC
9211 section 2 orders them), and the access log and the metrics read ``outcome``. Nobody parses the
text back. This module decides nothing about freshness; it only says what was decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

CACHE_NAME = "jsonp-cors-bridge"  # the member's name, as RFC 9211 section 2 asks: the cache's own


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """``hit``: served from an entry (``ttl`` seconds of freshness left, negative when stale). Else
    ``fwd`` says why the upstream was asked: ``uri-miss``, ``vary-miss``, ``stale``, ``method`` (not a
    bodiless GET or HEAD), ``bypass`` (``ttl = 0``)."""

    hit: bool
    ttl: int | None = None
    fwd: str | None = None
    fwd_status: int | None = None  # the upstream's status, when it is worth saying (a 304)
    stored: bool = False
    detail: str | None = None  # stale-if-error: a stale entry stood in for a failing upstream;
    # stale-while-revalidate: a stale entry answered while one background refresh renews it
    collapsed: bool = False  # this request waited for another's fetch and shares its answer
    text: str = field(init=False, compare=False, repr=False)  # the member as sent, made once
    # hit, stale (an entry served for a failing upstream) or miss (the upstream was asked, a
    # revalidation included): what the access log and the metrics count. Made once.
    outcome: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self._render())
        outcome = "stale" if self.detail == "stale-if-error" else "hit" if self.hit else "miss"
        object.__setattr__(self, "outcome", outcome)

    def __str__(self) -> str:
        return self.text

    def _render(self) -> str:
        parts = [CACHE_NAME]
        if self.hit:
            parts.append("hit")
            if self.ttl is not None:
                parts.append(f"ttl={self.ttl}")
        else:
            parts.append(f"fwd={self.fwd}")
            if self.fwd_status is not None:
                parts.append(f"fwd-status={self.fwd_status}")
            if self.stored:
                parts.append("stored")
                if self.ttl is not None:
                    parts.append(f"ttl={self.ttl}")
        if self.detail:
            parts.append(f"detail={self.detail}")
        if self.collapsed:
            parts.append("collapsed")
        return "; ".join(parts)

    def shared(self) -> CacheStatus:
        """This status, for a request that waited for the fetch it describes."""
        return replace(self, collapsed=True)


# A status is immutable, and a fresh hit's differs only by its whole seconds of ttl: one per value
# (as many as there are seconds in the longest lifetime served; past this many, made each time).
_FRESH_HITS: dict[int, CacheStatus] = {}
FRESH_HITS_KEPT = 4096


def hit_status(ttl: float, detail: str | None = None) -> CacheStatus:
    seconds = int(ttl)
    if detail is not None:
        return CacheStatus(True, seconds, detail=detail)
    status = _FRESH_HITS.get(seconds)
    if status is None:
        status = CacheStatus(True, seconds)
        if len(_FRESH_HITS) < FRESH_HITS_KEPT:
            _FRESH_HITS[seconds] = status
    return status


def forwarded_status(reason: str, *, stored: bool = False, fwd_status: int | None = None,
                     ttl: float | None = None) -> CacheStatus:
    return CacheStatus(False, None if ttl is None else int(ttl), reason, fwd_status, stored)

"""The deadline watchdog cuts a waiting socket when its deadline passes, and never one it has released."""

from __future__ import annotations

import socket
import time

from bridge.deadline import Watchdog


def test_a_blocked_read_is_cut_when_the_deadline_passes() -> None:
    watchdog = Watchdog()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(30)  # the per-read timeout would let this wait 30 s
        with watchdog.watch(time.monotonic() + 0.2) as watch:
            watchdog.attach_current(ours)
            assert ours.recv(1) == b""  # woken by the shutdown, not by data or the timeout
        assert watch.fired


def test_a_finished_watch_never_cuts_a_socket_that_went_back_to_the_pool() -> None:
    watchdog = Watchdog()
    pooled, peer = socket.socketpair()
    later, later_peer = socket.socketpair()
    with pooled, peer, later, later_peer:
        with watchdog.watch(time.monotonic() + 0.05) as first:
            watchdog.attach_current(pooled)
        # A second watch due after the first one: once it has fired, the first one's turn has
        # passed too (the watchdog fires in deadline order).
        later.settimeout(30)
        with watchdog.watch(time.monotonic() + 0.1) as second:
            watchdog.attach_current(later)
            assert later.recv(1) == b""
        assert second.fired and not first.fired
        peer.sendall(b"x")
        pooled.settimeout(5)
        assert pooled.recv(1) == b"x"  # still whole, ready for the next request


def test_a_socket_attached_after_the_deadline_is_cut_at_once() -> None:
    watchdog = Watchdog()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(30)
        with watchdog.watch(time.monotonic() - 1) as watch:
            for _ in range(1000):  # the deadline is already past: the watchdog fires it at once
                if watch.fired:
                    break
                time.sleep(0.01)
            assert watch.fired
            watchdog.attach_current(ours)
            assert ours.recv(1) == b""

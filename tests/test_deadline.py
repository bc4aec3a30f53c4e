"""The deadline watchdog cuts a waiting socket when its deadline passes, and never one it has released."""

from __future__ import annotations

import socket
import time

from bridge.upstream.deadline import Watchdog


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


def test_a_deadline_earlier_than_the_one_the_watchdog_sleeps_until_still_wakes_it() -> None:
    # The watchdog is notified only for a deadline earlier than its next look at the heap: here it
    # sleeps until a watch 60 s away, and the second, due in 0.1 s, must wake it (not wait 60 s).
    watchdog = Watchdog()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(20)  # a missed wake-up shows as a timeout, not as a hang
        with watchdog.watch(time.monotonic() + 60) as far:
            time.sleep(0.05)  # let the watchdog start sleeping until the far deadline
            with watchdog.watch(time.monotonic() + 0.1) as near:
                watchdog.attach_current(ours)
                assert ours.recv(1) == b""
            assert near.fired and not far.fired


def test_watches_falling_due_together_all_fire() -> None:
    # Later deadlines do not wake the watchdog; it fires everything due in one round.
    watchdog = Watchdog()
    pairs = [socket.socketpair() for _ in range(20)]
    try:
        watches = []
        for i, (ours, _) in enumerate(pairs):
            ours.settimeout(20)
            context = watchdog.watch(time.monotonic() + 0.05 + i * 0.005)
            watch = context.__enter__()
            watch.attach(ours)
            watches.append((context, watch))
        for ours, _ in pairs:
            assert ours.recv(1) == b""
        assert all(watch.fired for _, watch in watches)
        for context, _ in reversed(watches):
            context.__exit__(None, None, None)
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()

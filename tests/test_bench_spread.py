"""The bench's reading of how wrk's connections sat on the workers (``bench/run.py``)."""

from __future__ import annotations

import pytest

from bench.run import busier_share, evenly_spread


@pytest.mark.parametrize(("spread", "workers", "even"), [
    ("16/16", 2, True),
    ("17/15", 2, False),
    ("32", 2, False),  # one worker took them all
    ("16", 2, False),  # only one worker seen
    ("", 2, False),  # ss could not tell
    ("11/11/10", 3, True),  # 32 over 3 cannot be equal: none more than one above another
    ("12/10/10", 3, False),
    ("8/8/8/8", 4, True),
])
def test_even_rounds_are_those_where_every_worker_held_an_equal_share(spread: str, workers: int,
                                                                      even: bool) -> None:
    assert evenly_spread(spread, workers) is even


def test_the_busier_share_is_the_busiest_workers_part_of_the_connections() -> None:
    assert (busier_share("24/8"), busier_share("32"), busier_share("")) == (0.75, 1.0, None)

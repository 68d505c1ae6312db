"""server.mistakes: a client's mistake is a WARNING at most once per kind per minute, the rest DEBUG."""

from __future__ import annotations

import logging

from server import mistakes
from server.mistakes import MistakeLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_warning_per_kind_per_window(caplog):
    clock = Clock()
    limiter = MistakeLog(window=60.0, clock=clock)
    logger = logging.getLogger("test.mistakes")
    with caplog.at_level(logging.DEBUG, logger="test.mistakes"):
        assert limiter.log(logger, "bad chunk", "bad chunk from %s", "a") is True
        clock.now += 30
        assert limiter.log(logger, "bad chunk", "bad chunk from %s", "b") is False
        assert limiter.log(logger, "bad chunk", "bad chunk from %s", "c") is False
        assert limiter.log(logger, "bad line", "bad line from %s", "d") is True
        clock.now += 30.5
        assert limiter.log(logger, "bad chunk", "bad chunk from %s", "e") is True
    seen = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert seen == [
        ("WARNING", "bad chunk from a"),
        ("DEBUG", "bad chunk from b"),
        ("DEBUG", "bad chunk from c"),
        ("WARNING", "bad line from d"),
        ("WARNING", "bad chunk from e (2 more like it in the last 60 s, logged at DEBUG)"),
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_kinds_remembered_are_bounded():
    limiter = MistakeLog(clock=Clock())
    logger = logging.getLogger("test.mistakes.bound")
    for index in range(mistakes.MAX_KINDS * 3):
        limiter.log(logger, f"kind {index}", "x")
    assert len(limiter._kinds) == mistakes.MAX_KINDS

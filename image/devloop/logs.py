"""Logging for the dev loop's own messages (logger ``devloop``).

Lines go to stderr as ``[devloop] message``: one line per event (start, reload, install step,
error). The served app's own logging is configured by ``server.create_app`` in the app process
and is left alone: the ``devloop`` logger does not propagate to the root logger.
"""

import logging
import sys

LOGGER_NAME = "devloop"


def get_logger() -> logging.Logger:
    """Return the ``devloop`` logger, adding its stderr handler on first use."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[devloop] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger

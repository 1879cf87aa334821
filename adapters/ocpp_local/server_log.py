"""The websockets server's own log lines, as an installer wants them.

websockets logs a request it cannot read as an HTTP upgrade (a 50 KB header, a port scanner, a
TLS client on a plain port) as ERROR "opening handshake failed" with a traceback, once per
attempt. Nothing of the gateway failed and nothing can be done but know it happened: one WARNING
line with who sent it and why it was refused. Everything else websockets logs passes unchanged.
"""

from __future__ import annotations

import logging

HANDSHAKE_FAILED = "opening handshake failed"
LOGGER_NAME = "websockets.server.ocpp_local"  # under "websockets": the levels set for it apply


class _HandshakeFailure(logging.Filter):
    """Turns websockets' handshake traceback into one WARNING line (the record is changed in place)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != HANDSHAKE_FAILED or not record.exc_info:
            return True
        error = record.exc_info[1]
        reasons = []
        while error is not None and len(reasons) < 3:  # InvalidMessage, then what it was caused by
            reasons.append(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
            error = error.__cause__ or error.__context__
        connection = getattr(record, "websocket", None)
        address = getattr(connection, "remote_address", None)
        peer = str(address[0]) if isinstance(address, tuple) and address else "a client"
        record.msg = "local OCPP server: refused a request from %s that is no websocket upgrade it can read (%s)"
        record.args = (peer, "; ".join(reasons))
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info = record.exc_text = None
        return True


def server_logger() -> logging.Logger:
    """The logger to hand websockets' ``serve(logger=...)``."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, _HandshakeFailure) for f in logger.filters):
        logger.addFilter(_HandshakeFailure())
    return logger

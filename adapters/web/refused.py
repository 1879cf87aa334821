"""An answer with an error status and one short line of text: what every refusal of the status
page's server is, so that no client ever sees a traceback."""

from __future__ import annotations

from aiohttp import web


class Refused(Exception):
    """A request answered with an error status and a short text (never a traceback)."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers or {}

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=f"{self.status}: {self.text}\n", headers=self.headers)

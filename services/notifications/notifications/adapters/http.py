"""The HTTP client of the delivery worker: centres' webhooks and intake's identity API.

One aiohttp session for the whole worker, with connections kept open between requests (a few
per host; each webhook lane uses one at a time). aiohttp rather than httpx: on the development
machine a keep-alive POST costs about a fifth of httpx's CPU (docs/notifications.md, Measured).
Redirects are never followed, cookies never kept, and failures come out as one ``HttpFailure``
saying what kind of failure it was, for the channels to classify. Proxies come from the
environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``), without aiohttp's ``trust_env``,
which looks them (and ~/.netrc) up in a thread for every request.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import aiohttp

FailureKind = Literal["timeout", "connect", "bad_url", "transport"]


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes


class HttpFailure(Exception):
    """No HTTP answer: ``kind`` for the classification, ``name`` the underlying error's class."""

    def __init__(self, kind: FailureKind, name: str) -> None:
        super().__init__(f"{kind}: {name}")
        self.kind = kind
        self.name = name


class HttpClient:
    def __init__(self, max_connections: int = 8, keepalive_s: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._proxies = {
            scheme: url
            for scheme, url in urllib.request.getproxies_environment().items()
            if scheme in ("http", "https", "no")
        }

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, keepalive_timeout=self._keepalive_s
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> HttpAnswer:
        """POST ``body``; the answer (any status), or ``HttpFailure``. The whole request,
        connecting included, is bounded by ``timeout_s``."""
        timeout = self._timeouts.get(timeout_s)
        if timeout is None:
            timeout = self._timeouts[timeout_s] = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._open().post(
                url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                proxy=self._proxy(url),
            ) as response:
                # Read to the end, so that the connection can serve the next request.
                return HttpAnswer(response.status, await response.read())
        except TimeoutError as error:
            raise HttpFailure("timeout", type(error).__name__.lower()) from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError) as error:
            raise HttpFailure("bad_url", type(error).__name__.lower()) from None
        except aiohttp.ClientConnectorError as error:
            raise HttpFailure("connect", type(error).__name__.lower()) from None
        except (aiohttp.ClientError, OSError) as error:
            raise HttpFailure("transport", type(error).__name__.lower()) from None

    def _proxy(self, url: str) -> str | None:
        if not self._proxies:
            return None
        parts = urllib.parse.urlsplit(url)
        proxy = self._proxies.get(parts.scheme)
        if proxy is None or urllib.request.proxy_bypass(parts.hostname or ""):
            return None
        return proxy

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

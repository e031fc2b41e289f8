"""The emulated nucleus's token exchange service (``aws.greengrass.TokenExchangeService``).

On a Greengrass core the token exchange service (TES) is a nucleus built-in: a local HTTP
server that hands out the temporary AWS credentials of the device's IoT role alias. A
component that declares a dependency on ``aws.greengrass.TokenExchangeService`` gets two
environment variables, which the AWS SDKs' container credential provider (botocore's
``ContainerProvider``) reads::

    AWS_CONTAINER_CREDENTIALS_FULL_URI=http://localhost:<port>/2016-11-01/credentialprovider/
    AWS_CONTAINER_AUTHORIZATION_TOKEN=<the component's SVCUID>

The SDK sends ``GET`` on that URI with the token as its ``Authorization`` header and gets
``{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`` (ISO 8601, UTC) back. Here, as
on a real core: a missing token, a token that is no component's, or the token of a component
that does not depend on the service is answered ``403``; another method ``405``; another
path ``400``. botocore takes an ``http://`` full URI only from a loopback address or
``localhost`` (or the ECS/EKS link-local hosts), hence ``localhost``.

The credentials handed out are the ones :class:`TesCredentials` says; by default those of
the loopback S3 server (:mod:`agent.tools.s3.local_server`) with a session token, so that a
component's boto3 client talks to that server with nothing but what TES gave it. The server
listens only while the nucleus runs, on the same port across a nucleus restart (a running
component keeps its environment), and only when a component depends on it.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.tools.greengrass.recipe import Recipe
from agent.tools.nucleus.errors import NucleusError
from agent.tools.s3.local_server import ACCESS_KEY, SECRET_KEY

TOKEN_EXCHANGE_SERVICE = "aws.greengrass.TokenExchangeService"
CREDENTIALS_PATH = "/2016-11-01/credentialprovider/"
FULL_URI_ENV = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
AUTH_TOKEN_ENV = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
HOST = "127.0.0.1"
DEFAULT_SESSION_TOKEN = "emulated-tes-session-token"


@dataclass(frozen=True)
class TesCredentials:
    """What the service hands out; each answer expires ``lifetime_s`` after it is given
    (the IoT credentials provider's default is an hour)."""

    access_key_id: str = ACCESS_KEY
    secret_access_key: str = SECRET_KEY
    session_token: str = DEFAULT_SESSION_TOKEN
    lifetime_s: float = 3600.0

    def answer(self, now: float) -> dict[str, str]:
        """The JSON body of one answer, as the nucleus writes it."""
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + self.lifetime_s))
        return {"AccessKeyId": self.access_key_id, "SecretAccessKey": self.secret_access_key,
                "Token": self.session_token, "Expiration": expires}


def dependents(recipes: Mapping[str, Recipe]) -> frozenset[str]:
    """The components of ``recipes`` that declare a dependency on the service."""
    return frozenset(name for name, recipe in recipes.items()
                     if TOKEN_EXCHANGE_SERVICE in recipe.component_dependencies)


class TokenExchange:
    """The service for the components ``tokens`` names (component -> SVCUID), of which
    ``allowed`` may fetch credentials. ``served`` and ``refused`` count the answers: per
    component, and per HTTP status. Thread-safe."""

    def __init__(self, tokens: Mapping[str, str], allowed: frozenset[str],
                 credentials: TesCredentials | None = None, *, port: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self._tokens = dict(tokens)
        self.allowed = allowed
        self.credentials = credentials or TesCredentials()
        self.port = port
        self._clock = clock
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.served: Counter[str] = Counter()
        self.refused: Counter[int] = Counter()

    @property
    def needed(self) -> bool:
        """Whether any component depends on the service (else it never listens)."""
        return bool(self.allowed)

    @property
    def url(self) -> str:
        """The full URI the components get (the port is chosen at the first open)."""
        return f"http://localhost:{self.port}{CREDENTIALS_PATH}"

    def env(self, component: str) -> dict[str, str]:
        """The two variables for ``component``: none unless it depends on the service."""
        if component not in self.allowed:
            return {}
        with self._lock:
            if self.port == 0:
                self._bind()  # the port must be known before a component starts
        return {FULL_URI_ENV: self.url, AUTH_TOKEN_ENV: self._tokens[component]}

    def open(self) -> None:
        """Listen (when some component depends on the service) until :meth:`close`."""
        if not self.needed:
            return
        with self._lock:
            if self._thread is not None:
                return
            server = self._server or self._bind()
            self._thread = threading.Thread(target=server.serve_forever,
                                            kwargs={"poll_interval": 0.1}, daemon=True,
                                            name="emulated-tes")
            self._thread.start()

    def close(self) -> None:
        """Stop listening; the port is kept for the next :meth:`open`."""
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
        if server is None:
            return
        if thread is not None:
            server.shutdown()
            thread.join(5)
        server.server_close()

    def _bind(self) -> ThreadingHTTPServer:
        try:
            server = ThreadingHTTPServer((HOST, self.port), _handler(self))
        except OSError as err:
            raise NucleusError(f"the token exchange service cannot listen on {HOST}:"
                               f"{self.port}: {err}") from err
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        return server

    def answer(self, method: str, path: str, token: str | None) -> tuple[int, bytes]:
        """The status and body for one request (what the HTTP handler sends)."""
        if method != "GET":
            return self._refuse(HTTPStatus.METHOD_NOT_ALLOWED)
        if path.split("?", 1)[0] != CREDENTIALS_PATH:
            return self._refuse(HTTPStatus.BAD_REQUEST)
        component = self._component(token)
        if component is None or component not in self.allowed:
            return self._refuse(HTTPStatus.FORBIDDEN)
        with self._lock:
            self.served[component] += 1
        return HTTPStatus.OK, json.dumps(self.credentials.answer(self._clock())).encode()

    def _component(self, token: str | None) -> str | None:
        if not token:
            return None
        for name, known in self._tokens.items():
            if secrets.compare_digest(known.encode(), token.encode()):
                return name
        return None

    def _refuse(self, status: HTTPStatus) -> tuple[int, bytes]:
        with self._lock:
            self.refused[int(status)] += 1
        return status, b""


def _handler(service: TokenExchange) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "EmulatedTokenExchangeService"

        def _respond(self) -> None:
            status, body = service.answer(self.command, self.path,
                                          self.headers.get("Authorization"))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _respond

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no credentials in any log

    return Handler

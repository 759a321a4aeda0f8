"""`hpo dashboard`: optuna-dashboard on a study storage, served until Ctrl-C or SIGTERM.

A single command, no group: the root (`hpo.cli`) mounts `dashboard` itself.
"""

from __future__ import annotations

import errno
import signal
import socket
import socketserver
from collections.abc import Callable, Iterable
from typing import Annotated
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import typer

from hpo._errors import HpoError, StorageError
from hpo._notes import refresh_all
from hpo._storage import Heartbeat, mask_url, open_storage, resolve_url
from hpo.cli._common import StorageOption, is_loopback


class DashboardError(HpoError):
    """The dashboard cannot serve: the address is taken or cannot be bound."""


class _Stop(BaseException):
    """SIGTERM asks the server to stop, as Ctrl-C does. Not an Exception, as KeyboardInterrupt is
    not: a SIGTERM that lands while a request is served must not be taken for that request's error
    (the WSGI server logs those and serves on)."""


def dashboard(
    storage: StorageOption = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on. The dashboard has no login and can edit studies, so the "
        "default is this machine only; use 0.0.0.0 to share it on a trusted network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Serve optuna-dashboard on the storage: studies, trials, curves, and hpo's note on each study
    (spec, lineage, confirmed choice, test result). Needs pip install 'hpo-studies[dashboard]'."""
    url = resolve_url(storage)
    try:
        import optuna_dashboard  # an optional extra, and heavy: only this command needs it
    except ImportError:
        raise DashboardError("the dashboard is an optional part of hpo; install it with: "
                             "pip install 'hpo-studies[dashboard]'") from None
    # No heartbeats: the dashboard never runs trials.
    opened = open_storage(url, Heartbeat(interval=None))
    # Studies created before hpo named the metric and wrote notes get them now.
    try:
        refresh_all(opened)
    except StorageError:  # a read-only file: the dashboard still shows what it holds
        typer.echo(f"Note: {mask_url(url)} cannot be written, so studies made before hpo wrote notes are "
                   "shown without their metric name and note.", err=True)
    app = _restyled(optuna_dashboard.wsgi(opened))
    server = _bind(host, port, app)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"Dashboard of {mask_url(url)} on http://{shown}:{port}/dashboard/ (Ctrl-C to stop)")
    if not is_loopback(host):
        typer.echo(f"Warning: {host} is reachable from other machines, and the dashboard has no login.",
                   err=True)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    typer.echo("Dashboard stopped.")


# optuna-dashboard shows each user attribute on one line that never wraps, and a trial's `curves`
# (every epoch's metrics) is thousands of characters long: the whole trial page then scrolls
# sideways, its values off screen. This lets such lines wrap inside their box, which scrolls
# when tall. (tests/test_dashboard.py measures the rendered page's width in Chromium.)
_STYLE = b"<style>p.MuiTypography-body1 { white-space: normal; overflow-wrap: anywhere; }</style>"


def _restyled(app: Callable) -> Callable:
    """The dashboard's WSGI app with `_STYLE` added to its HTML page; everything else passes through."""

    def serve(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(("/api/", "/static/")):
            # A page cached from a plain optuna-dashboard would come back as "not modified",
            # without the style: pages are always sent whole (they are 4 KB).
            environ = {k: v for k, v in environ.items() if k not in ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE")}
        started: list = []
        body = app(environ, lambda status, headers, exc_info=None: started.extend((status, headers, exc_info)))
        status, headers, exc_info = started
        html = any(k.lower() == "content-type" and v.startswith("text/html") for k, v in headers)
        if not html:
            start_response(status, headers, exc_info)
            return body
        try:
            page = b"".join(body)
        finally:
            getattr(body, "close", lambda: None)()
        page = page.replace(b"</head>", _STYLE + b"</head>", 1)
        headers = [(k, v) for k, v in headers if k.lower() not in ("content-length", "etag", "last-modified")]
        start_response(status, [*headers, ("Content-Length", str(len(page)))], exc_info)
        return [page]

    return serve


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open request never holds up stopping


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request would bury the address line


def _bind(host: str, port: int, app) -> WSGIServer:
    server_class = _ThreadedServer6 if ":" in host else _ThreadedServer
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = ("another program uses that port; pick another with --port" if _in_use(exc)
                else "check --host (an address or name of this machine, e.g. 127.0.0.1)")
        raise DashboardError(f"cannot serve on {host}:{port}: {reason}; {hint}") from None


def _in_use(exc: OSError) -> bool:
    return exc.errno == errno.EADDRINUSE


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Stop

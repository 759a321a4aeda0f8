"""`hpo storage …`: check that a storage URL works and what it holds; serve it to many workers."""

from __future__ import annotations

import os
from typing import Annotated

import optuna
import typer

from hpo import _proxy
from hpo._storage import (
    STORAGE_ENV, Heartbeat, backend_name, listed, mask_url, open_storage, resolve_storage, resolve_url, schema_version)
from hpo.cli._common import JsonOption, StorageOption, group, is_loopback, print_json, print_table

app = group(help="Check storages; serve one to many workers through a gRPC proxy.")


@app.command()
def check(
    url: Annotated[str | None, typer.Argument(
        show_default=False, help="The storage URL, as an argument instead of --storage.")] = None,
    storage: StorageOption = None,
    json_: JsonOption = False,
) -> None:
    """Connect, print the backend and schema version, and list the studies."""
    if url and storage and storage != os.environ.get(STORAGE_ENV) and storage != url:
        raise typer.BadParameter("give the storage URL once, as an argument or with --storage",
                                 param_hint="--storage")
    url = resolve_url(url or storage)
    opened = open_storage(url, Heartbeat(interval=None))
    schema = schema_version(opened)
    summaries = listed(lambda: optuna.get_all_study_summaries(opened, include_best_trial=False))
    studies = [{"name": s.study_name, "trials": s.n_trials} for s in summaries]
    if json_:
        print_json({"url": mask_url(url), "backend": backend_name(url), "schema": schema, "studies": studies})
        return
    # A journal has no schema version; a proxy does not tell the version of the database behind it.
    version = f", schema {schema}" if schema else ""
    typer.echo(f"{mask_url(url)}: {backend_name(url)}{version}, {len(studies)} studies")
    if studies:
        print_table(["study", "trials"], [[s["name"], s["trials"]] for s in studies])


@app.command()
def serve(
    storage: StorageOption = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on. The proxy has no login and lets anyone who reaches it change "
        "studies, so the default is this machine only; use 0.0.0.0 for workers on other machines "
        "of a trusted network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on; 0: a free one, "
                                      "printed on the first line.")] = _proxy.DEFAULT_PORT,
    threads: Annotated[int, typer.Option(
        min=1, max=256, help="Requests served at once, and so the most database connections the "
        "proxy opens, however many workers use it.")] = _proxy.DEFAULT_THREADS,
) -> None:
    """Serve a SQLite, PostgreSQL or MySQL database to many workers through Optuna's gRPC storage
    proxy; workers then use --storage grpc://HOST:PORT. Stops on Ctrl-C or SIGTERM."""
    url = resolve_storage(storage)
    database = _proxy.open_database(url, threads)
    shown = f"[{host}]" if ":" in host else host

    def ready(bound: int) -> None:
        typer.echo(f"Serving {url.masked} on grpc://{shown}:{bound} (Ctrl-C to stop)")
        if not is_loopback(host):
            typer.echo(f"Warning: {host} is reachable from other machines, and the proxy has no login.", err=True)

    _proxy.serve(database, host, port, threads, on_ready=ready)
    typer.echo("Proxy stopped.")


"""`hpo storage …`: check that a storage URL works and what it holds."""

from __future__ import annotations

import os
from typing import Annotated

import optuna
import typer

from hpo._storage import (
    STORAGE_ENV, Heartbeat, backend_name, mask_url, open_storage, resolve_url, schema_version)
from hpo.cli._common import JsonOption, StorageOption, group, print_json, print_table

app = group(help="Check storages.")


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
    summaries = optuna.get_all_study_summaries(opened, include_best_trial=False)
    studies = [{"name": s.study_name, "trials": s.n_trials} for s in summaries]
    if json_:
        print_json({"url": mask_url(url), "backend": backend_name(url), "schema": schema, "studies": studies})
        return
    typer.echo(f"{mask_url(url)}: {backend_name(url)}, schema {schema or 'journal'}, {len(studies)} studies")
    if studies:
        print_table(["study", "trials"], [[s["name"], s["trials"]] for s in studies])

"""`hpo storage …`: check that a storage URL works and what it holds."""

from __future__ import annotations

from typing import Annotated

import optuna
import typer

from hpo._storage import Heartbeat, backend_name, mask_url, open_storage, resolve_url
from hpo.cli._common import JsonOption, handles_errors, print_json, print_table

app = typer.Typer(help="Check storages.", no_args_is_help=True)


@app.command()
@handles_errors
def check(
    url: Annotated[str | None, typer.Argument(
        envvar="HPO_STORAGE", show_envvar=True, help="The storage URL (default: the default SQLite file).")] = None,
    json_: JsonOption = False,
) -> None:
    """Connect, print the backend and schema version, and list the studies."""
    url = resolve_url(url)
    storage = open_storage(url, Heartbeat(interval=None))
    schema = None
    if isinstance(storage, optuna.storages.RDBStorage):
        schema = storage.get_current_version()
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    studies = [{"name": s.study_name, "trials": s.n_trials} for s in summaries]
    if json_:
        print_json({"url": mask_url(url), "backend": backend_name(url), "schema": schema, "studies": studies})
        return
    typer.echo(f"{mask_url(url)}: {backend_name(url)}, schema {schema or 'journal'}, {len(studies)} studies")
    if studies:
        print_table(["study", "trials"], [[s["name"], s["trials"]] for s in studies])

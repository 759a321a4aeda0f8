"""`hpo worker`: a long-running worker of a fleet; and `hpo study priority`, which orders the fleet's work.

The root (`hpo.cli`) mounts `worker` itself and `priority_app`'s command under `hpo study`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpo import _fleet
from hpo._storage import mask_url, resolve_url
from hpo.cli._common import JsonOption, NameArg, StorageOption, group, print_json


def worker(
    storage: StorageOption = None,
    study: Annotated[list[str] | None, typer.Option(
        "--study", help="Only this study (repeat for several). Default: every study in the storage.")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="When nothing is left, wait for new studies and raised targets instead of stopping.")] = False,
    poll: Annotated[float, typer.Option(
        min=0.1, help="Seconds between looks at the storage while there is nothing to run.")] = 2.0,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the data files.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line per trial.")] = False,
    json_: JsonOption = False,
) -> None:
    """Run trials of whichever studies in the storage still have budget, highest priority first,
    equal priorities sharing the workers. Start one per core on each machine, then only create
    studies. Stops when nothing is left (or waits, with --wait); SIGTERM or Ctrl-C records the
    running trial as failed and stops."""
    url = resolve_url(storage)
    fleet = _fleet.Worker(url, study or (), wait=wait, poll_seconds=poll,
                          data_dir=str(data_dir) if data_dir else None,
                          on_trial=None if quiet or json_ else lambda done: typer.echo(_fleet.describe(done)))
    ran = fleet.run()
    if json_:
        print_json({"storage": mask_url(url), "trials": [
            {"study": done.study, "number": done.trial.number, "state": done.trial.state.name,
             "value": done.trial.value} for done in ran]})
        return
    typer.echo(f"No study in {mask_url(url)} has trials left to start; this worker ran {len(ran)}.")


priority_app = group()


@priority_app.command()
def priority(
    name: NameArg,
    value: Annotated[int, typer.Argument(metavar="N", help="The priority: higher runs first; the default is 0.")],
    storage: StorageOption = None,
    json_: JsonOption = False,
) -> None:
    """Set the priority `hpo worker` gives a study (overrides the spec's [study] priority)."""
    url = resolve_url(storage)
    before = _fleet.set_priority(name, url, value)
    if json_:
        print_json({"study": name, "priority": value, "was": before})
        return
    typer.echo(f"Study '{name}': priority {value} (was {before}).")

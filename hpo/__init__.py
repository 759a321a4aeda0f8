"""hpo: hyperparameter optimization of the NumPy trainer with Optuna.

The Python API has one function per `hpo study` command, named like it (docs/api.md):
`create`, `open_study`, `run`, `narrow`, `confirm`, `evaluate`, `best`, `show`, `trials`,
`list_studies`, `delete`, `export`, `copy`; `best_trial` and `ranked` read trials directly.
"""

from hpo._api import (
    Narrowed,
    best,
    best_trial,
    confirm,
    copy,
    create,
    delete,
    evaluate,
    export,
    list_studies,
    narrow,
    open_study,
    ranked,
    run,
    show,
    trials,
)
from hpo._confirm import Confirmation
from hpo._errors import HpoError, Interrupted, SpecError, StorageError, StudyError
from hpo._spec import StudySpec, load_spec, parse_spec
from hpo._storage import (
    DEFAULT_STORAGE,
    Heartbeat,
    StorageURL,
    mask_url,
    open_storage,
    resolve_storage,
    resolve_url,
)
from hpo._study import Progress, RunResult, StudyHandle
from hpo._version import __version__

__all__ = [
    "DEFAULT_STORAGE",
    "Confirmation",
    "Heartbeat",
    "HpoError",
    "Interrupted",
    "Narrowed",
    "Progress",
    "RunResult",
    "SpecError",
    "StorageError",
    "StorageURL",
    "StudyError",
    "StudyHandle",
    "StudySpec",
    "__version__",
    "best",
    "best_trial",
    "confirm",
    "copy",
    "create",
    "delete",
    "evaluate",
    "export",
    "list_studies",
    "load_spec",
    "mask_url",
    "narrow",
    "open_storage",
    "open_study",
    "parse_spec",
    "ranked",
    "resolve_storage",
    "resolve_url",
    "run",
    "show",
    "trials",
]

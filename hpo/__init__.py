"""hpo: hyperparameter optimization of the NumPy trainer with Optuna."""

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
from hpo._study import (
    StudyHandle,
    best_trial,
    create,
    delete,
    list_studies,
    open_study,
    ranked,
    run,
)
from hpo._version import __version__

__all__ = [
    "DEFAULT_STORAGE",
    "Heartbeat",
    "HpoError",
    "Interrupted",
    "SpecError",
    "StorageError",
    "StorageURL",
    "StudyError",
    "StudyHandle",
    "StudySpec",
    "__version__",
    "best_trial",
    "create",
    "delete",
    "list_studies",
    "load_spec",
    "mask_url",
    "open_storage",
    "open_study",
    "parse_spec",
    "ranked",
    "resolve_storage",
    "resolve_url",
    "run",
]

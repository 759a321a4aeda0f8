"""hpo: hyperparameter optimization of the NumPy trainer with Optuna."""

__version__ = "0.1.0"

from hpo._errors import HpoError, Interrupted, SpecError, StorageError, StudyError  # noqa: E402
from hpo._spec import StudySpec, load_spec, parse_spec  # noqa: E402
from hpo._storage import DEFAULT_STORAGE, Heartbeat, mask_url, open_storage, resolve_url  # noqa: E402
from hpo._study import (  # noqa: E402
    StudyHandle,
    best_trial,
    create,
    delete,
    list_studies,
    open_study,
    ranked,
    run,
)

__all__ = [
    "DEFAULT_STORAGE",
    "Heartbeat",
    "HpoError",
    "Interrupted",
    "SpecError",
    "StorageError",
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
    "resolve_url",
    "run",
]

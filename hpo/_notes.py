"""What hpo knows about a study, shown in optuna-dashboard: the metric's name, the study's role
and a note (Markdown) with the spec, lineage, narrowed ranges, confirmed choice and test result.

The note is stored the way optuna-dashboard stores its notes (study system attributes holding a
version and the text in chunks), so it is written on a base install without the dashboard package
and read back by the dashboard as its own. Text a person adds below the note's last line is kept
when hpo rewrites the part above it.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from hpo import _optuna_internals as internals
from hpo._errors import SpecError
from hpo._storage import listed

METRIC_NAME = "validation accuracy"
ROLE_ATTR = "hpo_role"  # user attribute: SEARCH or CONFIRMATION
SEARCH = "search"
CONFIRMATION = "confirmation"  # the `NAME:confirm` companion: seed re-runs, not a search

# optuna-dashboard's own keys and chunk size (optuna_dashboard/_note.py); a test reads a note
# written here back through optuna_dashboard.get_note.
NOTE_VERSION_KEY = "dashboard:note_ver"
NOTE_CHUNK_PREFIX = "dashboard:note_str:"
NOTE_CHUNK = 2045

KEEP_LINE = "*Notes below this line are yours: hpo keeps them when it updates the part above.*"


def refresh(study: optuna.Study) -> None:
    """Name the metric, set the study's role and rewrite its note when what hpo knows has changed.

    A study without hpo's spec attribute is left alone. Writes only what differs, so calling it
    on an unchanged study costs reads only.
    """
    attrs = study.user_attrs
    if not isinstance(attrs.get("spec"), dict):
        return
    if study.metric_names != [METRIC_NAME]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])
    role = role_of(study.study_name, attrs)
    if attrs.get(ROLE_ATTR) != role:
        study.set_user_attr(ROLE_ATTR, role)
        attrs = {**attrs, ROLE_ATTR: role}
    storage, study_id = internals.study_storage(study), internals.study_id(study)
    system = storage.get_study_system_attrs(study_id)
    old = read_note(system)
    new = compose(study.study_name, attrs)
    yours = old.split(KEEP_LINE, 1)[1] if KEEP_LINE in old else ""
    if new + yours != old:
        _write_note(storage, study_id, system, new + yours)


def refresh_all(storage: optuna.storages.BaseStorage) -> int:
    """`refresh` every hpo study in the storage; returns how many there are."""
    count = 0
    for frozen in listed(storage.get_all_studies):
        if isinstance(frozen.user_attrs.get("spec"), dict):
            try:
                refresh(optuna.load_study(study_name=frozen.study_name, storage=storage))
            except KeyError:  # deleted by another process since the listing
                continue
            count += 1
    return count


def role_of(name: str, attrs: dict[str, Any]) -> str:
    """CONFIRMATION for a study that holds confirmation runs, else SEARCH."""
    from hpo._confirm import SUFFIX  # _confirm builds on _study, which calls this module
    from hpo._study import QUEUE_ONLY_ATTR

    if attrs.get(ROLE_ATTR) in (SEARCH, CONFIRMATION):
        return attrs[ROLE_ATTR]
    return CONFIRMATION if attrs.get(QUEUE_ONLY_ATTR) or name.endswith(SUFFIX) else SEARCH


def read_note(system_attrs: dict[str, Any]) -> str:
    """The study note's text as optuna-dashboard reads it from the study's system attributes."""
    if NOTE_VERSION_KEY not in system_attrs:
        return ""
    chunks = sorted((int(k[len(NOTE_CHUNK_PREFIX):]), v) for k, v in system_attrs.items()
                    if k.startswith(NOTE_CHUNK_PREFIX))
    return "".join(v for _, v in chunks)


def note(study: optuna.Study) -> str:
    """The study's note text (what the dashboard's Note panel shows)."""
    return read_note(internals.study_storage(study).get_study_system_attrs(internals.study_id(study)))


def _write_note(storage: optuna.storages.BaseStorage, study_id: int, system: dict[str, Any], body: str) -> None:
    # The dashboard refuses an edit whose version is not the stored one plus one, so a page
    # open while hpo writes reloads the note rather than overwriting it.
    storage.set_study_system_attr(study_id, NOTE_VERSION_KEY, int(system.get(NOTE_VERSION_KEY, 0)) + 1)
    chunks = [body[i:i + NOTE_CHUNK] for i in range(0, len(body), NOTE_CHUNK)]
    for i, chunk in enumerate(chunks):
        storage.set_study_system_attr(study_id, f"{NOTE_CHUNK_PREFIX}{i}", chunk)
    stale = sum(k.startswith(NOTE_CHUNK_PREFIX) for k in system)
    for i in range(len(chunks), stale):  # the dashboard joins every chunk key; empty ones add nothing
        storage.set_study_system_attr(study_id, f"{NOTE_CHUNK_PREFIX}{i}", "")


def compose(name: str, attrs: dict[str, Any]) -> str:
    """The note hpo writes for a study from its user attributes, ending with KEEP_LINE."""
    from hpo._confirm import CONFIRMED_ATTR
    from hpo._evaluate import TEST_RESULT_ATTR
    from hpo._racing import RACE_ATTR
    from hpo._study import LINEAGE_ATTR

    lineage = attrs.get(LINEAGE_ATTR) or {}
    parts = [_heading(name, attrs, lineage)]
    if lineage and role_of(name, attrs) == SEARCH:
        parts.append(_lineage(lineage))
    if attrs.get(RACE_ATTR):
        parts.append(_raced(attrs[RACE_ATTR]))
    if attrs.get(CONFIRMED_ATTR):
        parts.append(_confirmed(attrs[CONFIRMED_ATTR]))
    if attrs.get(TEST_RESULT_ATTR):
        parts.append(_tested(attrs[TEST_RESULT_ATTR]))
    parts.append(_spec(name, attrs["spec"]))
    parts.append(f"---\n\n{KEEP_LINE}")
    return "\n\n".join(parts)


def _heading(name: str, attrs: dict[str, Any], lineage: dict[str, Any]) -> str:
    if role_of(name, attrs) == CONFIRMATION:
        parent = lineage.get("parent") or name.rsplit(":", 1)[0]
        return (f"**Bookkeeping study, not a search:** the confirmation runs of `{parent}` "
                f"(`hpo study confirm {parent}`).\n\n"
                f"Each trial retrains one of `{parent}`'s best configurations with a fresh seed, so the "
                f"parameter importances here compare seed re-runs and mean nothing. The confirmed choice "
                f"is recorded in `{parent}`'s note.")
    objective = attrs.get("objective", "final-epoch validation accuracy (maximized)")
    version = attrs.get("hpo_version")
    return (f"## hpo study `{name}`\n\n"
            f"The value of a trial is its {objective}. "
            f"Created {attrs.get('created', '?')}" + (f" by hpo {version}" if version else "") + ".")


def _lineage(lineage: dict[str, Any]) -> str:
    lines = [f"### Lineage\n\nNarrowed from `{lineage.get('parent')}` on {lineage.get('date', '?')}: "
             f"{lineage.get('rule', '?')}."]
    if lineage.get("best_trials"):
        lines.append(f"Best trials of the parent used: {', '.join(map(str, lineage['best_trials']))}.")
    if lineage.get("warm_start") is not None:
        lines.append(f"Warm-started with {lineage['warm_start']} of the parent's finished trials "
                     "inside the new ranges (user attribute `warm_start` on each).")
    text = " ".join(lines)
    ranges = lineage.get("ranges") or {}
    if ranges:
        text += "\n\n### Narrowed ranges\n\n" + "\n".join(_range_line(k, v) for k, v in ranges.items())
    return text


def _range_line(name: str, r: dict[str, Any]) -> str:
    if r.get("type") == "categorical":
        old, new = ", ".join(map(str, r["old"])), ", ".join(map(str, r["new"]))
        line = f"- `{name}`: {{{old}}} → {{{new}}}"
    else:
        scale = " (log)" if r.get("log") else ""
        (a, b), (c, d) = r["old"], r["new"]
        line = f"- `{name}`: [{_num(a)}, {_num(b)}] → [{_num(c)}, {_num(d)}]{scale}"
    notes = []
    if r.get("crowded"):
        notes.append("best trials crowd the " + " and ".join(
            "upper" if side == "high" else "lower" for side in r["crowded"]) + " edge")
    if r.get("widened"):
        notes.append("widened past the old range")
    return line + (f" ({'; '.join(notes)})" if notes else "")


def _confirmed(c: dict[str, Any]) -> str:
    params = "\n".join(f"- `{k}` = {_num(v)}" for k, v in (c.get("params") or {}).items())
    return (f"### Confirmed choice\n\nTrial {c.get('trial')}: mean validation accuracy "
            f"{_num(c.get('mean'))} ± {_num(c.get('sd'))} over {c.get('seeds')} seeds "
            f"(single run {_num(c.get('original'))}; the best {c.get('top')} configurations re-checked "
            f"on {c.get('date', '?')}).\n\n{params}")


def _raced(r: dict[str, Any]) -> str:
    params = "\n".join(f"- `{k}` = {_num(v)}" for k, v in (r.get("params") or {}).items())
    se = f" ± {_num(r['stderr'])} (standard error)" if r.get("stderr") is not None else ""
    return (f"### The race's choice\n\nConfiguration {r.get('number')}: mean validation accuracy "
            f"{_num(r.get('mean'))}{se} over {r.get('runs')} folds, the best mean among the most-evaluated "
            f"of {r.get('configurations')} configurations raced; {r.get('epochs_spent')} of "
            f"{r.get('budget_epochs')} epochs of the budget spent (as of {r.get('date', '?')}).\n\n{params}")


def _tested(t: dict[str, Any]) -> str:
    forced = " A forced second look at the test split." if t.get("forced") else ""
    return (f"### Test result\n\nTest accuracy {_num(t.get('mean'))} ± {_num(t.get('std'))} over "
            f"{len(t.get('seeds') or [])} seeds, trial {t.get('trial')} ({t.get('source')}; validation "
            f"{_num(t.get('validation'))}), retrained on {t.get('n_train')} samples and scored on "
            f"{t.get('n_test')} test samples on {t.get('date', '?')}.{forced}")


def _spec(name: str, stored: dict[str, Any]) -> str:
    from hpo._spec import parse_spec

    try:
        text = parse_spec(stored, source=f"study '{name}'").to_toml().rstrip()
    except SpecError as exc:  # written by another hpo version: say so rather than fail the note
        return f"### Spec\n\nThe stored spec does not read in this hpo version: {exc}"
    return f"### Spec\n\n```toml\n{text}\n```"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

"""One self-contained HTML page per study: spec, lineage, best trials, narrowed ranges, figures,
confirmation and the test result. Figures are embedded as base64 PNG, so the file can be mailed
or archived on its own.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
from pathlib import Path
from typing import Any

from hpo._version import __version__
from hpo._confirm import SUFFIX as CONFIRM_SUFFIX
from hpo._confirm import confirmed_choice
from hpo._errors import StudyError
from hpo._format import fmt
from hpo._evaluate import TEST_RESULT_ATTR
from hpo._child import WARM_START_ATTR, narrow_study
from hpo._narrow import Narrowing, describe
from hpo._files import check_target, write_file
from hpo._plots import FIGURES, KINDS, render
from hpo._storage import mask_url
from hpo._study import LINEAGE_ATTR, StudyHandle, count_states, list_studies, ranked

BEST_ROWS = 10

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 0.25em 0.7em; text-align: left; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.warn { color: #8c3fb8; } .note { color: #666; font-style: italic; }
.result { font-size: 1.3em; font-weight: bold; }
"""

def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    return fmt(value, digits)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            cells.append(f'<td class="num">{_e(_num(cell))}</td>' if numeric else f"<td>{_e(_num(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _png(fig, dpi: int) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build(handle: StudyHandle, top: int | None = None, dpi: int = 80, kinds: tuple[str, ...] = KINDS) -> str:
    """The report of a study as one HTML string.

    Args:
        handle: the study.
        top: the best-K used for the narrowing and the ranges figure (default: the best 20%).
        dpi: resolution of the embedded figures.
        kinds: the figures to include (those that do not apply are listed with the reason).
    """
    study, spec = handle.study, handle.spec
    attrs = study.user_attrs
    counts = count_states(study)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>hpo report: {_e(handle.name)}</title><style>{CSS}</style></head><body>",
             f"<h1>Study {_e(handle.name)}</h1>",
             f"<p class='sub'>{_e(spec.description or 'no description')} · data {_e(spec.data.dataset)} "
             f"({_e(spec.data.samples or 'all')} samples, {spec.data.validation_fraction:g} held out for validation)"
             f" · {spec.epochs} epochs · created {_e(attrs.get('created', '?'))} · storage "
             f"{_e(mask_url(handle.url))}</p>",
             "<p>Trials: " + _e(", ".join(f"{n.lower()} {c}" for n, c in counts.items() if c) or "none") + "</p>"]
    parts += _test_section(attrs.get(TEST_RESULT_ATTR))
    parts += _lineage_section(handle)
    parts += _race_section(handle) if spec.objective.raced else _best_section(handle)
    narrowing, narrow_note = None, ""
    try:
        narrowing = narrow_study(handle, top=top)
    except StudyError as exc:
        narrow_note = str(exc)
    parts += _narrow_section(handle, narrowing, narrow_note)
    parts += _confirm_section(confirmed_choice(study))
    parts.append("<h2>Figures</h2>")
    for kind in kinds:
        try:
            fig = render(study, kind, top=top)
        except StudyError as exc:
            parts.append(f"<p class='note'>{_e(kind)}: not drawn ({_e(exc)})</p>")
            continue
        parts.append(f"<figure id='fig-{kind}'><img alt='{_e(kind)} figure' "
                     f"src='data:image/png;base64,{_png(fig, dpi)}'><figcaption><b>{_e(kind)}</b>: "
                     f"{_e(FIGURES[kind].caption)}</figcaption></figure>")
    parts.append("<h2>Spec</h2><pre>" + _e(spec.to_toml()) + "</pre>")
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    parts.append(f"<p class='note'>Made by hpo {_e(__version__)} on {_e(stamp)}.</p></body></html>")
    return "\n".join(parts)


def _test_section(result: dict | None) -> list[str]:
    if not result:
        return ["<h2>Test result</h2><p class='note'>Not evaluated on the test split yet "
                "(<code>hpo study evaluate</code> does it once, at the end).</p>"]
    seeds = result.get("seeds", [])
    out = ["<h2>Test result</h2>",
           f"<p class='result'>test accuracy {_num(result.get('mean'))} ± {_num(result.get('std'))} "
           f"over {len(seeds)} seeds</p>",
           f"<p>Configuration: trial #{_e(result.get('trial'))} ({_e(result.get('source'))}; validation accuracy "
           f"{_num(result.get('validation'))}), retrained on train + validation ({_e(result.get('n_train'))} "
           f"samples), scored on {_e(result.get('n_test'))} test samples on {_e(result.get('date'))}"
           + (" — <b>forced</b> re-evaluation" if result.get("forced") else "") + ".</p>",
           _table(["seed", "test accuracy", "test loss", "outcome"],
                  [[s.get("seed"), s.get("accuracy"), s.get("loss"), s.get("outcome")] for s in seeds])]
    for earlier in result.get("history", []):
        out.append(f"<p class='note'>Earlier evaluation on {_e(earlier.get('date'))}: "
                   f"{_num(earlier.get('mean'))} ± {_num(earlier.get('std'))} (trial #{_e(earlier.get('trial'))})</p>")
    return out


def _lineage_section(handle: StudyHandle) -> list[str]:
    lineage = handle.study.user_attrs.get(LINEAGE_ATTR)
    out = ["<h2>Lineage</h2>"]
    if lineage:
        out.append(f"<p>Narrowed from <b>{_e(lineage.get('parent'))}</b> on {_e(lineage.get('date'))}: "
                   f"{_e(lineage.get('rule'))}; warm-started with {_e(lineage.get('warm_start', 0))} of the "
                   f"parent's trials.</p>")
        ranges = lineage.get("ranges") or {}
        out.append(_table(["parameter", "parent's range", "this study's range"],
                          [[name, _range_text(r, "old"), _range_text(r, "new")] for name, r in ranges.items()]))
    else:
        out.append("<p>A root study (not narrowed from another).</p>")
    try:
        children = [r.name for r in list_studies(handle.url)
                    if r.parent == handle.name and not r.name.endswith(CONFIRM_SUFFIX)]
    except Exception:  # noqa: BLE001 - a listing problem must not cost the whole report
        children = []
    if children:
        out.append("<p>Children: " + ", ".join(f"<b>{_e(c)}</b>" for c in children) + "</p>")
    return out


def _range_text(r: dict, key: str) -> str:
    value = r.get(key)
    if r.get("type") == "categorical":
        return ", ".join(map(str, value or []))
    low, high = value
    return f"{_num(low)} .. {_num(high)}" + (" (log)" if r.get("log") else "")


def _best_section(handle: StudyHandle) -> list[str]:
    best = ranked(handle.study)[:BEST_ROWS]
    if not best:
        return ["<h2>Best trials</h2><p class='note'>No complete trial yet.</p>"]
    names = [p.name for p in handle.spec.search]
    rows = [[f"Best-{i}", t.number, t.value, *[t.params.get(n) for n in names], t.user_attrs.get("epochs"),
             "warm start" if WARM_START_ATTR in t.user_attrs else t.user_attrs.get("phase", "-")]
            for i, t in enumerate(best, 1)]
    return ["<h2>Best trials</h2>", _table(["rank", "trial", "validation accuracy", *names, "epochs", "phase"], rows)]


def _race_section(handle: StudyHandle) -> list[str]:
    """A raced study's choice and the evidence behind its best configurations."""
    from hpo._racing import evidence, leader_text, ranked_configurations, standing

    now = standing(handle)
    head = (f"<h2>Race</h2><p>{_e(now.spent)} of {_e(now.budget)} epochs of the budget spent on "
            f"{_e(len(now.configurations))} configurations, {now.settings.folds} folds"
            + (f" x {now.settings.repeats} repeats" if now.settings.repeats > 1 else "") + ". ")
    if now.choice is None:
        return [head + "No run has finished yet.</p>"]
    head += f"The choice: {_e(leader_text(now.choice).removeprefix('incumbent '))}.</p>"
    names = [p.name for p in handle.spec.search]
    rows = []
    for c in ranked_configurations(now)[:BEST_ROWS]:
        e = evidence(c, now)
        rows.append([e["number"], e["runs"], ",".join(map(str, e["folds"])) or "-", e["mean"], e["stderr"],
                     *[e["params"].get(n) for n in names], e["epochs"], e["state"]])
    return [head, _table(["configuration", "runs", "folds", "mean", "standard error", *names, "epochs", "state"],
                         rows)]


def _narrow_section(handle: StudyHandle, narrowing: Narrowing | None, note: str) -> list[str]:
    out = ["<h2>Narrowed ranges</h2>"]
    if narrowing is None:
        return out + [f"<p class='note'>{_e(note)}</p>"]
    out.append(f"<p>Rule: {_e(narrowing.rule)}.</p>")
    rows = []
    for p in narrowing.params:
        where = " · ".join(f"{b[2]}" for b in p.bins)
        edge = ", ".join(f"crowds the {'upper' if s == 'high' else 'lower'} edge" for s in p.crowded)
        if p.widened is not None:
            edge += f"; --widen: {describe(p.widened)}"
        rows.append([p.name, describe(p.old), describe(p.new), where, edge or "-"])
    out.append(_table(["parameter", "old range", "new range", "best trials across the old range", "edge"], rows))
    command = f"hpo study narrow {handle.name}" + (" --widen" if narrowing.crowded else "") + " --into CHILD"
    out.append(f"<p>Continue with <code>{_e(command)}</code>.</p>")
    if narrowing.crowded:
        out.append("<p class='warn'>The best trials crowd an edge of the old range: the optimum may lie beyond "
                   "it, so widening that side is likely better than narrowing it.</p>")
    return out


def _confirm_section(choice: dict | None) -> list[str]:
    if not choice:
        return []
    rows = [[r.get("trial"), r.get("original"), r.get("mean"), r.get("sd"), r.get("min"), r.get("max"),
             r.get("diverged", 0)] for r in choice.get("table", [])]
    return ["<h2>Confirmed configurations</h2>",
            f"<p>The best {_e(choice.get('top'))} configurations retrained with {_e(choice.get('seeds'))} fresh "
            f"seeds each on {_e(choice.get('date'))}; the choice is trial #{_e(choice.get('trial'))} "
            f"(mean {_num(choice.get('mean'))} ± {_num(choice.get('sd'))}).</p>",
            _table(["trial", "single run", "mean", "sd", "min", "max", "diverged"], rows)]


def write(handle: StudyHandle, path: str | Path, top: int | None = None, dpi: int = 80) -> int:
    """Write the report to `path` whole or not at all (a new or regular file); returns its size in bytes."""
    check_target(Path(path))  # refused before the figures are drawn, not after
    data = build(handle, top=top, dpi=dpi).encode("utf-8")
    write_file(Path(path), data)
    return len(data)

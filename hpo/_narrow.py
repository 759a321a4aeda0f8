"""Narrowing: from the best trials of a study to a smaller search space.

The rule (`narrow`) is pure: given a search space and trials it returns, per parameter, the
range spanned by the best trials, widened by a margin and clipped to the old range. Numeric
parameters are narrowed in the space they are sampled in (log10 for `log = true`), so a margin
of 0.1 on a learning rate means a tenth of the decades the best trials span. Integers are
rounded outward; categoricals keep the choices the best trials use.

When the best trials crowd an edge of the old range, the optimum may lie beyond it: narrowing
would only fence it out. The result flags that side and offers a widened range instead (one
decade further for log parameters, one old span further for linear ones).

Nothing here reads or writes a study: `hpo/_child.py` turns a narrowing into a child study.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpo._errors import StudyError
from hpo._spec import CategoricalParam, FloatParam, IntParam, SearchParam, StudySpec

MIN_COMPLETE = 5  # fewer complete trials say little about where the good region is
DEFAULT_QUANTILE = 0.2  # without --top/--quantile: the best fifth, as the seed's best 20 of 100
DEFAULT_MARGIN = 0.1
# A side of the old range counts as crowded when the best trials' extreme lies within the margin
# of it *and* at least EDGE_SHARE of them lie in the EDGE_ZONE of the old span next to it. The
# second test tells "the good region runs into the wall" from "the parameter hardly matters, so
# the best trials are everywhere, the wall included".
EDGE_ZONE = 0.25
EDGE_SHARE = 0.5
DIGITS = 3  # significant digits of a narrowed float bound (rounded outward)

Check = Callable[[str, Any], bool]


@dataclass(frozen=True)
class ParamNarrowing:
    """One parameter: its old and new range, and where the best trials fell.

    Attributes:
        old: the parameter as the study searched it.
        new: the narrowed parameter (same type and scale).
        values: the best trials' values of it, best trial first.
        bins: (low, high, count) over the old range (per decade for log ranges of 2 to 8
            decades, else five equal parts in the sampling scale; per value for small integer
            ranges; per choice, with low = high = the choice, for categoricals).
        crowded: the sides ("low", "high") of the old range that the best trials crowd: their
            extreme lies within `margin` of the old span from that edge, and at least half of
            them lie in the quarter of the old range next to it.
        widened: `new` with each crowded side pushed beyond the old edge, or None when no side
            is crowded (or no wider value is valid for the trainer).
    """

    old: SearchParam
    new: SearchParam
    values: tuple[Any, ...]
    bins: tuple[tuple[Any, Any, int], ...]
    crowded: tuple[str, ...] = ()
    widened: SearchParam | None = None

    @property
    def name(self) -> str:
        return self.old.name

    def target(self, widen: bool = False) -> SearchParam:
        return self.widened if widen and self.widened is not None else self.new


@dataclass(frozen=True)
class Narrowing:
    """The result of the rule: one ParamNarrowing per searched parameter, and how it was chosen."""

    params: tuple[ParamNarrowing, ...]
    best: tuple[int, ...]  # trial numbers of the best trials, best first
    n_complete: int
    rule: str
    margin: float
    top: int | None = None  # as asked for
    quantile: float | None = None

    def param(self, name: str) -> ParamNarrowing:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def crowded(self) -> list[ParamNarrowing]:
        return [p for p in self.params if p.crowded]

    @property
    def can_widen(self) -> bool:
        return any(p.widened is not None for p in self.params)

    def search(self, widen: bool = False) -> tuple[SearchParam, ...]:
        """The narrowed search space; with `widen`, crowded sides pushed beyond the old range."""
        return tuple(p.target(widen) for p in self.params)

    def contains(self, params: dict[str, Any], widen: bool = False) -> bool:
        """Whether a trial's parameters lie inside the narrowed space."""
        return all(p.target(widen).name in params and inside(p.target(widen), params[p.name])
                   for p in self.params)

    def ranges(self, widen: bool = False) -> dict[str, Any]:
        """The old and new range of every parameter, JSON-ready (stored in a child's lineage)."""
        result: dict[str, Any] = {}
        for p in self.params:
            new = p.target(widen)
            if isinstance(p.old, CategoricalParam):
                result[p.name] = {"type": "categorical", "old": list(p.old.choices),
                                  "new": list(new.choices)}  # type: ignore[union-attr]
            else:
                result[p.name] = {"type": p.old.kind, "log": p.old.log, "old": [p.old.low, p.old.high],
                                  "new": [new.low, new.high]}  # type: ignore[union-attr]
            if p.crowded:
                result[p.name]["crowded"] = list(p.crowded)
            if widen and p.widened is not None:
                result[p.name]["widened"] = True
        return result


def inside(param: SearchParam, value: Any) -> bool:
    if isinstance(param, CategoricalParam):
        return any(value == c and type(value) is type(c) for c in param.choices)
    return isinstance(value, (int, float)) and param.low <= value <= param.high


# ---------------------------------------------------------------------------------------
# The rule


def select_best(trials: Iterable[FrozenTrial], top: int | None = None,
                quantile: float | None = None) -> tuple[list[FrozenTrial], str, int]:
    """The best complete trials by value: the best `top`, or the best `quantile` share.

    Trials tied with the last one selected are selected too, so the result never depends on
    which of two equal trials ran first. Returns (best first, rule text, complete count).
    """
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
                       and math.isfinite(t.value)), key=lambda t: (-t.value, t.number))
    n = len(complete)
    if top is not None and quantile is not None:
        raise StudyError("give --top or --quantile, not both")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 2):
        raise StudyError(f"--top must be a whole number >= 2 (a range needs two trials); got {top!r}")
    if quantile is not None and not (isinstance(quantile, (int, float)) and 0 < quantile <= 1):
        raise StudyError(f"--quantile must be in (0, 1], the share of complete trials to keep; got {quantile!r}")
    if n < MIN_COMPLETE:
        raise StudyError(f"only {n} complete trial{'s' if n != 1 else ''}; narrowing needs at least "
                         f"{MIN_COMPLETE} (run more trials first)")
    if top is not None and top > n:
        raise StudyError(f"--top {top} is more than the {n} complete trials; use --top {n} or fewer")
    if top is not None:
        k, how = top, f"--top {top}"
    else:
        share = DEFAULT_QUANTILE if quantile is None else float(quantile)
        k, how = max(2, math.ceil(share * n)), f"top {share:.0%}"
    cut = complete[k - 1].value
    best = [t for t in complete if t.value >= cut]
    ties = f", {len(best) - k} more tied" if len(best) > k else ""
    return best, f"best {len(best)} of {n} complete trials ({how}{ties})", n


def narrow(search: Sequence[SearchParam], trials: Iterable[FrozenTrial], top: int | None = None,
           quantile: float | None = None, margin: float = DEFAULT_MARGIN,
           check: Check | None = None) -> Narrowing:
    """Narrow a search space to where the best trials lie.

    Args:
        search: the space the trials were sampled from (a spec's `search`).
        trials: the study's trials; only complete ones with a finite value count.
        top: narrow to the best `top` trials (at least 2).
        quantile: or to the best share of them, in (0, 1]; default 0.2 when neither is given.
        margin: widen each numeric range by this fraction of its span (in log10 for log
            parameters) on each side, clipped to the old range; also how close to an old edge
            the best trials must come to count as crowding it.
        check: `check(name, value)` says whether a trainer accepts the value; used to keep a
            widened edge valid (weight decay >= 0, dropout < 1 …). Default: everything is valid.

    Raises:
        StudyError: too few complete trials, `top` larger than the study, a numeric parameter
            whose best values are all equal, or bad arguments; one line each.
    """
    if not search:
        raise StudyError("the study searches no parameter, so there is nothing to narrow")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 1:
        raise StudyError(f"--margin must be in [0, 1], a fraction of each range's span; got {margin!r}")
    names = [p.name for p in search]
    usable = [t for t in trials if all(n in t.params for n in names)]
    best, rule, n = select_best(usable, top, quantile)
    params = tuple(_narrow_param(p, tuple(t.params[p.name] for t in best), float(margin), check)
                   for p in search)
    return Narrowing(params, tuple(t.number for t in best), n, f"{rule}, margin {margin:g}", float(margin),
                     top, quantile)


def _narrow_param(p: SearchParam, values: tuple[Any, ...], margin: float, check: Check | None) -> ParamNarrowing:
    if isinstance(p, CategoricalParam):
        kept = tuple(c for c in p.choices if any(inside(CategoricalParam(p.name, (c,)), v) for v in values))
        bins = tuple((c, c, sum(inside(CategoricalParam(p.name, (c,)), v) for v in values)) for c in p.choices)
        return ParamNarrowing(p, CategoricalParam(p.name, kept), values, bins)

    to, back = (math.log10, lambda t: 10.0 ** t) if p.log else (float, float)
    lo, hi = to(min(values)), to(max(values))
    if hi == lo:
        raise StudyError(
            f"{p.name}: the best {len(values)} trials all have {p.name} = {values[0]:g}, so there is no "
            f"range to narrow to; use more of the best trials (--top/--quantile) or fix {p.name} in the spec")
    old_lo, old_hi = to(p.low), to(p.high)
    span, old_span = hi - lo, old_hi - old_lo
    new_lo, new_hi = lo - margin * span, hi + margin * span
    low = p.low if new_lo <= old_lo else back(new_lo)
    high = p.high if new_hi >= old_hi else back(new_hi)
    if isinstance(p, IntParam):
        new: SearchParam = IntParam(p.name, max(p.low, math.floor(low + 1e-9)),
                                    min(p.high, math.ceil(high - 1e-9)), p.log)
    else:
        # Round outward to a few digits, but never past a best value or the old edge.
        low = max(p.low, min(_round(low, down=True), min(values)))
        high = min(p.high, max(_round(high, down=False), max(values)))
        new = FloatParam(p.name, low, high, p.log)
    near_low = sum(to(v) - old_lo <= EDGE_ZONE * old_span for v in values) / len(values)
    near_high = sum(old_hi - to(v) <= EDGE_ZONE * old_span for v in values) / len(values)
    crowded = tuple(side for side, gap, share in (("low", lo - old_lo, near_low), ("high", old_hi - hi, near_high))
                    if gap <= margin * old_span and share >= EDGE_SHARE)
    widened = _widen(p, new, crowded, check) if crowded else None
    return ParamNarrowing(p, new, values, _bins(p, values), crowded, widened)


def _round(x: float, down: bool) -> float:
    """x rounded to DIGITS significant digits, towards -inf (down) or +inf."""
    if x == 0 or not math.isfinite(x):
        return x
    exponent = math.floor(math.log10(abs(x))) - (DIGITS - 1)
    mantissa = x / 10.0 ** exponent
    whole = math.floor(mantissa + 1e-9) if down else math.ceil(mantissa - 1e-9)
    return float(f"{whole}e{exponent}")


def _widen(old: SearchParam, new: SearchParam, crowded: tuple[str, ...], check: Check | None) -> SearchParam | None:
    """`new` with each crowded side moved past the old edge: a decade (log) or an old span (linear).

    A wider edge that the trainer would refuse is pulled back halfway, a few times; a side with
    no valid wider value stays at the old edge.
    """
    assert isinstance(old, (FloatParam, IntParam)) and isinstance(new, (FloatParam, IntParam))
    low, high = new.low, new.high
    changed = False
    for side in crowded:
        edge = old.low if side == "low" else old.high
        sign = -1 if side == "low" else 1
        for halving in range(6):
            step = 0.5 ** halving
            if old.log:
                value = edge * 10.0 ** (sign * step)
            else:
                value = edge + sign * step * (old.high - old.low)
            if isinstance(old, IntParam):
                value = math.floor(value) if side == "low" else math.ceil(value)
                if value == edge:
                    break
            else:
                value = _round(value, down=side == "low")
            if (not old.log or value > 0) and (check is None or check(old.name, value)):
                low, high = (value, high) if side == "low" else (low, value)
                changed = True
                break
    if not changed:
        return None
    return type(old)(old.name, low, high, old.log)  # type: ignore[call-arg]


def _bins(p: FloatParam | IntParam, values: tuple[Any, ...]) -> tuple[tuple[Any, Any, int], ...]:
    if isinstance(p, IntParam) and p.high - p.low < 8:
        return tuple((v, v, sum(x == v for x in values)) for v in range(p.low, p.high + 1))
    to, back = (math.log10, lambda t: 10.0 ** t) if p.log else (float, float)
    old_lo, old_hi = to(p.low), to(p.high)
    decades = old_hi - old_lo
    parts = round(decades) if p.log and 2 <= round(decades) <= 8 and abs(decades - round(decades)) < 1e-9 else 5
    edges = [old_lo + (old_hi - old_lo) * i / parts for i in range(parts + 1)]
    counts = [0] * parts
    for v in values:
        t = to(v)
        index = min(parts - 1, max(0, int((t - old_lo) / (old_hi - old_lo) * parts)))
        counts[index] += 1
    bounds = [p.low] + [back(e) for e in edges[1:-1]] + [p.high]
    return tuple((bounds[i], bounds[i + 1], counts[i]) for i in range(parts))


def describe(param: SearchParam) -> str:
    """A range for people: `1e-06 .. 0.01 (log)`, `2 .. 6`, `sgd, adam`."""
    if isinstance(param, CategoricalParam):
        return ", ".join(str(c) for c in param.choices)
    text = f"{_short(param.low)} .. {_short(param.high)}"
    return text + " (log)" if param.log else text


def _short(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.3g}"


# ---------------------------------------------------------------------------------------
# What the trainer accepts


def trainer_check(spec: StudySpec) -> Check:
    """`check(name, value)`: whether the spec's trainer config accepts value for name."""
    def check(name: str, value: Any) -> bool:
        try:
            spec.train_config({name: value}, seed=0, input_size=1, output_size=2)
        except (ValueError, TypeError):
            return False
        return True
    return check

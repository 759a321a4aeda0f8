"""Study specs: TOML files parsed into frozen dataclasses, validated once, stored whole in the study.

A spec has the sections [study], [data], [model], [training], [search.<name>], [sampler],
[pruner] and [objective]. Every key is known; anything else is an error naming the file, the key,
the rule and the value received.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from trainer import REGISTRY, ConfigError, TrainConfig

from hpo._errors import SpecError

DATASETS = tuple(REGISTRY)

# Trainer fields a spec may fix or search, by the section they belong to. `hidden_layers` and
# `hidden_units` are shorthands for `hidden_sizes` = [units] * layers, so depth and width can be
# searched as integers.
MODEL_FIELDS = (
    "hidden_sizes", "hidden_layers", "hidden_units", "activation", "init", "init_std",
    "batch_norm", "dropout", "weight_decay", "dtype",
)
TRAINING_FIELDS = (
    "optimizer", "lr", "momentum", "rho", "beta1", "beta2", "epochs", "batch_size",
)
SEARCHABLE = tuple(f for f in MODEL_FIELDS + TRAINING_FIELDS if f not in ("hidden_sizes", "dtype"))
SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median", "successive-halving", "hyperband")


@dataclass(frozen=True)
class FloatParam:
    name: str
    low: float
    high: float
    log: bool = False

    @property
    def kind(self) -> str:
        return "float"


@dataclass(frozen=True)
class IntParam:
    name: str
    low: int
    high: int
    log: bool = False

    @property
    def kind(self) -> str:
        return "int"


@dataclass(frozen=True)
class CategoricalParam:
    name: str
    choices: tuple[Any, ...]

    @property
    def kind(self) -> str:
        return "categorical"


SearchParam = Union[FloatParam, IntParam, CategoricalParam]


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "digits"
    samples: int | None = None  # training samples drawn from the pool; None: the whole pool
    validation_fraction: float = 0.2
    split_seed: int = 0


@dataclass(frozen=True)
class SamplerSpec:
    kind: str = "tpe"  # "random" searches at random throughout (a baseline)
    random_trials: int = 10  # random trials on log scales before TPE takes over
    multivariate: bool = True


@dataclass(frozen=True)
class PrunerSpec:
    kind: str = "none"
    startup_trials: int = 5  # median: trials that finish before any pruning
    warmup_epochs: int = 5  # median: epochs of each trial before it may be pruned
    min_epochs: int = 1  # successive halving / hyperband: the smallest budget
    reduction_factor: int = 3


@dataclass(frozen=True)
class ObjectiveSpec:
    repeats: int = 1  # training runs with different seeds per trial, averaged
    folds: int = 1  # > 1: k-fold cross-validation on the training samples


@dataclass(frozen=True)
class StudySpec:
    name: str
    seed: int = 0
    trials: int = 100  # the default target of `hpo study run`
    description: str = ""
    data: DataSpec = field(default_factory=DataSpec)
    fixed: dict[str, Any] = field(default_factory=dict)  # trainer fields held constant
    search: tuple[SearchParam, ...] = ()
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)

    @property
    def epochs(self) -> int:
        return int(self.fixed.get("epochs", TrainConfig.epochs))

    def param(self, name: str) -> SearchParam:
        for p in self.search:
            if p.name == name:
                return p
        raise KeyError(name)

    def train_config(
        self, params: dict[str, Any], *, seed: int, input_size: int, output_size: int
    ) -> TrainConfig:
        """The trainer config of one trial: fixed values, then the trial's parameters."""
        values = {**self.fixed, **params}
        layers = values.pop("hidden_layers", None)
        units = values.pop("hidden_units", None)
        if layers is not None or units is not None:
            default = values.get("hidden_sizes", TrainConfig.hidden_sizes)
            layers = len(default) if layers is None else layers
            units = (default[0] if default else 100) if units is None else units
            values["hidden_sizes"] = (int(units),) * int(layers)
        return TrainConfig(input_size=input_size, output_size=output_size, seed=seed, **values)

    def replace(self, **changes: Any) -> "StudySpec":
        return dataclasses.replace(self, **changes)

    # The stored form: a plain JSON-ready dict in the TOML layout, so that a study describes
    # itself and `run` needs only the name and the storage.
    def to_dict(self) -> dict[str, Any]:
        model = {k: v for k, v in self.fixed.items() if k in MODEL_FIELDS}
        training = {k: v for k, v in self.fixed.items() if k in TRAINING_FIELDS}
        for key, value in model.items():
            if isinstance(value, tuple):
                model[key] = list(value)
        search: dict[str, Any] = {}
        for p in self.search:
            if isinstance(p, CategoricalParam):
                search[p.name] = {"type": "categorical", "choices": list(p.choices)}
            else:
                search[p.name] = {"type": p.kind, "low": p.low, "high": p.high, "log": p.log}
        data = dataclasses.asdict(self.data)
        if data["samples"] is None:
            del data["samples"]
        return {
            "study": {"name": self.name, "seed": self.seed, "trials": self.trials,
                      "description": self.description},
            "data": data,
            "model": model,
            "training": training,
            "search": search,
            "sampler": dataclasses.asdict(self.sampler),
            "pruner": dataclasses.asdict(self.pruner),
            "objective": dataclasses.asdict(self.objective),
        }

    def to_toml(self) -> str:
        """The spec as TOML text (the inverse of `parse_spec`)."""
        lines: list[str] = []
        doc = self.to_dict()
        for section in ("study", "data", "model", "training"):
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in doc[section].items()]
            lines.append("")
        for name, body in doc["search"].items():
            lines.append(f"[search.{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
            lines.append("")
        for section in ("sampler", "pruner", "objective"):
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in doc[section].items()]
            lines.append("")
        return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a TOML spec file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file; the bundled specs are in studies/") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec file ({exc})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(document, source=str(path))


def parse_spec(document: dict[str, Any], source: str = "spec") -> StudySpec:
    """Validate a spec document (as read from TOML or from a stored study) into a StudySpec."""
    return _Parser(source).parse(document)


class _Parser:
    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, rule: str, value: Any = dataclasses.MISSING, fix: str = "") -> SpecError:
        got = "" if value is dataclasses.MISSING else f"; got {value!r}"
        return SpecError(f"{self.source}: {key} {rule}{got}" + (f" ({fix})" if fix else ""))

    def table(self, document: dict[str, Any], name: str) -> dict[str, Any]:
        value = document.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(f"[{name}]", "must be a table", value)
        return value

    def known(self, table: dict[str, Any], section: str, allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(
                    f"[{section}] {key}", "is not a known key", fix="known keys: " + ", ".join(allowed)
                )

    def typed(self, table: dict, section: str, key: str, kind: type | tuple, default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        is_bool = isinstance(value, bool)
        if (is_bool and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join({int: "an integer", float: "a number", str: "a string",
                                 bool: "true or false"}[k] for k in kinds)
            raise self.fail(f"[{section}] {key}", f"must be {names}", value)
        return value

    def int_at_least(self, table: dict, section: str, key: str, low: int, default: Any) -> Any:
        value = self.typed(table, section, key, int, default)
        if value is not None and value < low:
            raise self.fail(f"[{section}] {key}", f"must be an integer >= {low}", value)
        return value

    def parse(self, document: dict[str, Any]) -> StudySpec:
        if not isinstance(document, dict):
            raise self.fail("spec", "must be a TOML document of tables", document)
        sections = ("study", "data", "model", "training", "search", "sampler", "pruner", "objective")
        for key in document:
            if key not in sections:
                raise self.fail(f"[{key}]", "is not a known section", fix="known: " + ", ".join(sections))

        study = self.table(document, "study")
        self.known(study, "study", ("name", "seed", "trials", "description"))
        if "name" not in study:
            raise self.fail("[study] name", "is required", fix='add name = "my-study"')
        name = self.typed(study, "study", "name", str, None)
        if not name.strip() or len(name) > 200:
            raise self.fail("[study] name", "must be 1 to 200 characters", name)
        seed = self.int_at_least(study, "study", "seed", 0, 0)
        trials = self.int_at_least(study, "study", "trials", 1, 100)
        description = self.typed(study, "study", "description", str, "")

        data = self.parse_data(self.table(document, "data"))
        fixed = self.parse_fixed(document)
        search = self.parse_search(self.table(document, "search"), fixed)
        sampler = self.parse_sampler(self.table(document, "sampler"))
        pruner = self.parse_pruner(self.table(document, "pruner"))
        objective = self.parse_objective(self.table(document, "objective"), data)
        spec = StudySpec(name=name, seed=seed, trials=trials, description=description, data=data,
                         fixed=fixed, search=search, sampler=sampler, pruner=pruner,
                         objective=objective)
        self.check_configs(spec)
        return spec

    def parse_data(self, table: dict[str, Any]) -> DataSpec:
        self.known(table, "data", ("dataset", "samples", "validation_fraction", "split_seed"))
        dataset = self.typed(table, "data", "dataset", str, DataSpec.dataset)
        if dataset not in DATASETS:
            raise self.fail("[data] dataset", "must be one of " + ", ".join(DATASETS), dataset)
        samples = self.int_at_least(table, "data", "samples", 2, None)
        fraction = self.typed(table, "data", "validation_fraction", (int, float), 0.2)
        if not 0 < fraction < 1:
            raise self.fail("[data] validation_fraction", "must be in (0, 1)", fraction)
        split_seed = self.int_at_least(table, "data", "split_seed", 0, 0)
        return DataSpec(dataset, samples, float(fraction), split_seed)

    def parse_fixed(self, document: dict[str, Any]) -> dict[str, Any]:
        fixed: dict[str, Any] = {}
        for section, allowed in (("model", MODEL_FIELDS), ("training", TRAINING_FIELDS)):
            table = self.table(document, section)
            self.known(table, section, allowed)
            for key, value in table.items():
                if isinstance(value, dict):
                    raise self.fail(f"[{section}] {key}", "must be a value, not a table",
                                    fix=f"search it with a [search.{key}] table instead")
                fixed[key] = tuple(value) if isinstance(value, list) else value
        if "hidden_sizes" in fixed and ({"hidden_layers", "hidden_units"} & fixed.keys()):
            raise self.fail("[model] hidden_sizes", "cannot be combined with hidden_layers/hidden_units")
        return fixed

    def parse_search(self, table: dict[str, Any], fixed: dict[str, Any]) -> tuple[SearchParam, ...]:
        params: list[SearchParam] = []
        for name, body in table.items():
            key = f"[search.{name}]"
            if name not in SEARCHABLE:
                raise self.fail(key, "is not a searchable trainer field",
                                fix="searchable: " + ", ".join(SEARCHABLE))
            if name in fixed:
                raise self.fail(key, "is also fixed in [model] or [training]", fix="keep one of the two")
            if name in ("hidden_layers", "hidden_units") and "hidden_sizes" in fixed:
                raise self.fail(key, "cannot be searched while [model] hidden_sizes is fixed",
                                fix="fix hidden_layers/hidden_units instead")
            if not isinstance(body, dict):
                raise self.fail(key, "must be a table with type = float, int or categorical", body)
            kind = body.get("type")
            section = f"search.{name}"
            if kind == "categorical":
                self.known(body, section, ("type", "choices"))
                choices = body.get("choices")
                if not isinstance(choices, list) or not choices:
                    raise self.fail(f"{key} choices", "must be a non-empty list", choices)
                if len(set(map(repr, choices))) != len(choices):
                    raise self.fail(f"{key} choices", "must not repeat a value", choices)
                for choice in choices:
                    if not isinstance(choice, (str, int, float, bool)):
                        raise self.fail(f"{key} choices", "must hold strings, numbers or booleans", choice)
                params.append(CategoricalParam(name, tuple(choices)))
            elif kind in ("float", "int"):
                self.known(body, section, ("type", "low", "high", "log"))
                number = (int, float) if kind == "float" else int
                for bound in ("low", "high"):
                    if bound not in body:
                        raise self.fail(f"{key} {bound}", "is required")
                low = self.typed(body, section, "low", number, None)
                high = self.typed(body, section, "high", number, None)
                log = self.typed(body, section, "log", bool, False)
                if not (math.isfinite(low) and math.isfinite(high)):
                    raise self.fail(f"{key}", "low and high must be finite", (low, high))
                if low >= high:
                    raise self.fail(f"{key}", f"low must be < high; got low={low!r}, high={high!r}")
                if log and low <= 0:
                    raise self.fail(f"{key} low", "must be > 0 when log = true", low,
                                    fix="use a positive low such as 1e-8, or log = false")
                if kind == "float":
                    params.append(FloatParam(name, float(low), float(high), log))
                else:
                    params.append(IntParam(name, low, high, log))
            else:
                raise self.fail(f"{key} type", "must be float, int or categorical", kind)
        return tuple(params)

    def parse_sampler(self, table: dict[str, Any]) -> SamplerSpec:
        self.known(table, "sampler", ("kind", "random_trials", "multivariate"))
        kind = self.typed(table, "sampler", "kind", str, SamplerSpec.kind)
        if kind not in SAMPLERS:
            raise self.fail("[sampler] kind", "must be one of " + ", ".join(SAMPLERS), kind)
        random_trials = self.int_at_least(table, "sampler", "random_trials", 0, SamplerSpec.random_trials)
        multivariate = self.typed(table, "sampler", "multivariate", bool, True)
        return SamplerSpec(kind, random_trials, multivariate)

    def parse_pruner(self, table: dict[str, Any]) -> PrunerSpec:
        keys = ("kind", "startup_trials", "warmup_epochs", "min_epochs", "reduction_factor")
        self.known(table, "pruner", keys)
        kind = self.typed(table, "pruner", "kind", str, "none")
        if kind not in PRUNERS:
            raise self.fail("[pruner] kind", "must be one of " + ", ".join(PRUNERS), kind)
        return PrunerSpec(
            kind=kind,
            startup_trials=self.int_at_least(table, "pruner", "startup_trials", 0, 5),
            warmup_epochs=self.int_at_least(table, "pruner", "warmup_epochs", 0, 5),
            min_epochs=self.int_at_least(table, "pruner", "min_epochs", 1, 1),
            reduction_factor=self.int_at_least(table, "pruner", "reduction_factor", 2, 3),
        )

    def parse_objective(self, table: dict[str, Any], data: DataSpec) -> ObjectiveSpec:
        self.known(table, "objective", ("repeats", "folds"))
        repeats = self.int_at_least(table, "objective", "repeats", 1, 1)
        folds = self.int_at_least(table, "objective", "folds", 1, 1)
        if folds == 2 or folds > 20:
            raise self.fail("[objective] folds", "must be 1 (a single validation split) or 3 to 20", folds)
        return ObjectiveSpec(repeats, folds)

    def check_configs(self, spec: StudySpec) -> None:
        """Build a trainer config at each end of every searched range, so bad values fail now."""
        for p in spec.search:
            values = p.choices if isinstance(p, CategoricalParam) else (p.low, p.high)
            for value in values:
                self.check_one(spec, {p.name: value}, p)
        self.check_one(spec, {}, None)

    def check_one(self, spec: StudySpec, params: dict[str, Any], param: SearchParam | None) -> None:
        try:
            spec.train_config(params, seed=0, input_size=1, output_size=2)
        except ConfigError as exc:
            if param is not None and exc.field in (param.name, "hidden_sizes"):
                where = f"[search.{param.name}]"
            else:
                section = "training" if exc.field in TRAINING_FIELDS else "model"
                where = f"[{section}] {exc.field}"
            rule = str(exc).split(" must ", 1)[1]
            raise self.fail(where, "must " + rule) from None
        except TypeError as exc:  # a value of the wrong type reached a dataclass field
            raise self.fail("[model]/[training]", f"has a value of the wrong type ({exc})") from None

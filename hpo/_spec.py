"""Study specs: TOML files parsed into frozen dataclasses, validated once, stored whole in the study.

A spec has the sections [study], [data], [model], [training], [search.<name>], [sampler],
[pruner] and [objective]. Every key is declared once, with its section, type, default, rule and
meaning: the keys of [study], [data], [sampler], [pruner] and [objective] in the metadata of the
dataclass fields below, the trainer keys of [model] and [training] in `TRAINER_KEYS` (their
rules and defaults are the trainer's own). The parser, its messages, `to_dict`/`to_toml`, the
reference in docs/spec.md (`reference()`) and the tests all read those declarations.
Anything undeclared is an error naming the file, the key, the rule and the value received.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from trainer import (
    FIELD_RULES,
    REGISTRY,
    ConfigError,
    Flag,
    Integer,
    OneOf,
    Real,
    Rule,
    Sizes,
    TrainConfig,
)

from hpo._errors import SpecError

DATASETS = tuple(REGISTRY)
SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median", "successive-halving", "hyperband")
METHODS = ("single", "race")


@dataclass(frozen=True)
class Text(Rule):
    """A string of min_length to max_length characters, not all blank when min_length > 0."""

    min_length: int = 0
    max_length: int | None = None

    kind = "string"

    @property
    def text(self) -> str:  # type: ignore[override]
        if self.max_length is None:
            return "a string"
        return f"{self.min_length} to {self.max_length} characters"

    def validate(self, field: str, value: Any) -> Any:
        if (
            not isinstance(value, str)
            or (self.min_length > 0 and not value.strip())
            or len(value) < self.min_length
            or (self.max_length is not None and len(value) > self.max_length)
        ):
            raise ConfigError(field, self.text, value)
        return value

    def bad_values(self) -> tuple[Any, ...]:
        bad: list[Any] = [3, True]
        if self.min_length > 0:
            bad += ["", "   "]
        if self.max_length is not None:
            bad.append("x" * (self.max_length + 1))
        return tuple(bad)


@dataclass(frozen=True)
class Key:
    """One spec key: where it goes, what it accepts, what it is when left out, what it means.

    Attributes:
        section: "study", "data", "model", "training", "sampler", "pruner" or "objective".
        name: the key inside its section.
        rule: checks a value and words the rule in messages and docs.
        default: the value when the key is left out; dataclasses.MISSING when required;
            None when leaving it out means something of its own (said in `help`).
        help: what the key means, for the docs.
        example: a valid value for docs and tests where the default is not one.
        searchable: a trainer key that a [search.<name>] table may search instead.
    """

    section: str
    name: str
    rule: Rule
    default: Any
    help: str
    example: Any = None
    searchable: bool = False

    @property
    def label(self) -> str:
        return f"[{self.section}] {self.name}"

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @property
    def sample(self) -> Any:
        """A valid value of the key: the example if declared, else the default."""
        return self.default if self.example is None else self.example


def key(rule: Rule, help: str, default: Any = dataclasses.MISSING, example: Any = None) -> Any:
    """A dataclass field that is also a spec key; its section comes from `SECTIONS`."""
    meta = {"spec_key": (rule, help, example)}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


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
    dataset: str = key(OneOf(DATASETS), "the data set (`hpo data list` shows where its files are)", "digits")
    samples: int | None = key(
        Integer(), "samples drawn from the training pool, 2 to its size ("
        + ", ".join(f"{name} {info.pool_size}" for name, info in REGISTRY.items())
        + "); left out: the whole pool", None, example=500)
    validation_fraction: float = key(
        Real(0, 1, closed="neither"), "share of the samples held out to score each trial", 0.2)
    split_seed: int = key(Integer(low=0), "seed of the draw and the split, the same for every trial", 0)


@dataclass(frozen=True)
class SamplerSpec:
    kind: str = key(OneOf(SAMPLERS), "tpe: random trials, then TPE; random: at random throughout (a baseline)",
                    "tpe")
    random_trials: int = key(Integer(low=0), "random trials on log scales before TPE takes over", 10)
    multivariate: bool = key(Flag(), "TPE models the parameters jointly rather than one by one", True)


@dataclass(frozen=True)
class PrunerSpec:
    kind: str = key(OneOf(PRUNERS), "what stops hopeless trials early", "none")
    startup_trials: int = key(Integer(low=0), "median: trials that finish before any pruning", 5)
    warmup_epochs: int = key(Integer(low=0), "median: epochs of each trial before it may be pruned", 5)
    min_epochs: int = key(Integer(low=1), "successive halving, hyperband: the smallest budget in epochs", 1)
    reduction_factor: int = key(
        Integer(low=2), "successive halving, hyperband: 1 in this many trials goes on to the next rung", 3)


@dataclass(frozen=True)
class ObjectiveSpec:
    repeats: int = key(Integer(low=1), "training runs with different seeds per trial, averaged; race: seeds "
                       "per fold at most (the incumbent gathers up to folds x repeats runs)", 1)
    folds: int = key(
        Integer(low=1, high=20, skip=(2,), wording="1 (a single validation split) or 3 to 20"),
        "k-fold cross-validation on the training samples when more than 1; race: the folds raced on", 1)
    method: str = key(OneOf(METHODS), "single: every trial trains its configuration once per fold and "
                      "repeat; race: each run is one fold, raced against the incumbent (docs/search.md)", "single")
    margin: float = key(Real(0, None, closed="left"), "race: a challenger gets its next fold while its "
                        "paired deficit to the incumbent is below margin / sqrt(runs)", 0.08)
    prune_margin: float = key(Real(0, None, closed="left"), "race: a run is stopped at a checkpoint epoch "
                              "this far below the incumbent's run on the same fold", 0.15)
    prune_epochs: tuple[int, ...] = key(Sizes(), "race: the checkpoint epochs ([] never stops a run)", (10, 20))

    @property
    def raced(self) -> bool:
        return self.method == "race"


# The trainer's fields a spec may fix ([model], [training]) or search ([search.<name>]). Rules
# and defaults are the trainer's (`trainer.FIELD_RULES`, `TrainConfig`), except for the two
# shorthands `hidden_layers` and `hidden_units`: hidden_sizes = [units] * layers, so that depth
# and width can be searched as integers.
def _trainer_key(section: str, name: str, help: str, searchable: bool = True) -> Key:
    return Key(section, name, FIELD_RULES[name], getattr(TrainConfig, name), help, searchable=searchable)


_SIZES = TrainConfig.hidden_sizes

TRAINER_KEYS: tuple[Key, ...] = (
    _trainer_key("model", "hidden_sizes", "widths of the hidden layers, input side first", searchable=False),
    Key("model", "hidden_layers", Integer(low=0), len(_SIZES),
        "number of hidden layers, each hidden_units wide (instead of hidden_sizes)", searchable=True),
    Key("model", "hidden_units", Integer(low=1), _SIZES[0],
        "width of every hidden layer (instead of hidden_sizes)", searchable=True),
    _trainer_key("model", "activation", "activation of the hidden layers"),
    _trainer_key("model", "init", "initial weights: he, xavier, normal (init_std) or zero"),
    _trainer_key("model", "init_std", "standard deviation of the initial weights when init = normal"),
    _trainer_key("model", "batch_norm", "batch normalization after each hidden affine layer"),
    _trainer_key("model", "dropout", "probability of dropping a hidden unit while training"),
    _trainer_key("model", "weight_decay", "L2 penalty: weight_decay / 2 times the sum of squared weights (not biases)"),
    _trainer_key("model", "dtype", "float type of data and weights", searchable=False),
    _trainer_key("training", "optimizer", "the update rule"),
    _trainer_key("training", "lr", "learning rate"),
    _trainer_key("training", "momentum", "momentum and nesterov: velocity decay"),
    _trainer_key("training", "rho", "rmsprop: decay of the squared-gradient average"),
    _trainer_key("training", "beta1", "adam: decay of the gradient average"),
    _trainer_key("training", "beta2", "adam: decay of the squared-gradient average"),
    _trainer_key("training", "epochs", "passes over the training samples; the pruners' steps"),
    _trainer_key("training", "batch_size", "samples per gradient step"),
)
TRAINER = {k.name: k for k in TRAINER_KEYS}
MODEL_FIELDS = tuple(k.name for k in TRAINER_KEYS if k.section == "model")
TRAINING_FIELDS = tuple(k.name for k in TRAINER_KEYS if k.section == "training")
SEARCHABLE = tuple(k.name for k in TRAINER_KEYS if k.searchable)


@dataclass(frozen=True)
class StudySpec:
    name: str = key(Text(1, 200), "the study's name in its storage", example="my-study")
    seed: int = key(Integer(low=0), "seed of the sampler and of every trial's training runs", 0)
    trials: int = key(Integer(low=1), "the default target of `hpo study run`; a raced study's target is a "
                      "budget of epochs: trials x [training] epochs, every epoch of every run counted", 100)
    description: str = key(Text(), "what the study is for, for people", "")
    priority: int = key(Integer(), "`hpo worker` runs trials of higher-priority studies first; equal "
                        "priorities share the workers (`hpo study priority` changes it later)", 0)
    data: DataSpec = field(default_factory=DataSpec)
    fixed: dict[str, Any] = field(default_factory=dict)  # trainer fields held constant
    search: tuple[SearchParam, ...] = ()
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)

    @property
    def epochs(self) -> int:
        return int(self.fixed.get("epochs", TRAINER["epochs"].default))

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
            layers = TRAINER["hidden_layers"].default if layers is None else layers
            units = TRAINER["hidden_units"].default if units is None else units
            values["hidden_sizes"] = (int(units),) * int(layers)
        return TrainConfig(input_size=input_size, output_size=output_size, seed=seed, **values)

    def replace(self, **changes: Any) -> "StudySpec":
        return dataclasses.replace(self, **changes)

    # The stored form: a plain JSON-ready dict in the TOML layout, so that a study describes
    # itself and `run` needs only the name and the storage.
    def to_dict(self) -> dict[str, Any]:
        fixed = {k: list(v) if isinstance(v, tuple) else v for k, v in self.fixed.items()}
        search: dict[str, Any] = {}
        for p in self.search:
            if isinstance(p, CategoricalParam):
                search[p.name] = {"type": "categorical", "choices": list(p.choices)}
            else:
                search[p.name] = {"type": p.kind, "low": p.low, "high": p.high, "log": p.log}
        doc: dict[str, Any] = {}
        for section, holder in _holders(self).items():
            if holder is not None:
                doc[section] = _section_dict(holder)
            else:
                doc[section] = {k: v for k, v in fixed.items() if TRAINER[k].section == section}
        doc["search"] = search
        return {s: doc[s] for s in SECTION_ORDER}

    def to_toml(self) -> str:
        """The spec as TOML text (the inverse of `parse_spec`)."""
        lines: list[str] = []
        doc = self.to_dict()
        for section in SECTION_ORDER:
            tables = doc[section].items() if section == "search" else [(section, doc[section])]
            for name, body in tables:
                lines.append(f"[search.{name}]" if section == "search" else f"[{section}]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
                lines.append("")
        return "\n".join(lines)


# Sections whose keys are the fields of a dataclass, and where the spec keeps each one.
SECTIONS: dict[str, type] = {
    "study": StudySpec,
    "data": DataSpec,
    "sampler": SamplerSpec,
    "pruner": PrunerSpec,
    "objective": ObjectiveSpec,
}
SECTION_ORDER = ("study", "data", "model", "training", "search", "sampler", "pruner", "objective")


def _holders(spec: StudySpec) -> dict[str, Any]:
    """Section -> the dataclass holding its keys; None for the trainer sections (in spec.fixed)."""
    return {"study": spec, "data": spec.data, "model": None, "training": None,
            "sampler": spec.sampler, "pruner": spec.pruner, "objective": spec.objective}


def _section_dict(holder: Any) -> dict[str, Any]:
    # None stands for a key left out (TOML has no null), so it is not written.
    values = {k.name: getattr(holder, k.name) for k in _dataclass_keys("", type(holder))}
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in values.items() if value is not None}


def _dataclass_keys(section: str, cls: type) -> tuple[Key, ...]:
    keys = []
    for f in dataclasses.fields(cls):
        if "spec_key" in f.metadata:
            rule, help, example = f.metadata["spec_key"]
            keys.append(Key(section, f.name, rule, f.default, help, example))
    return tuple(keys)


def keys(section: str | None = None) -> tuple[Key, ...]:
    """Every declared spec key in document order, or those of one section."""
    found: list[Key] = []
    for name in SECTION_ORDER:
        if name in SECTIONS:
            found += _dataclass_keys(name, SECTIONS[name])
        else:
            found += [k for k in TRAINER_KEYS if k.section == name]
    return tuple(k for k in found if section is None or k.section == section)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def reference() -> str:
    """The reference of every spec key as Markdown: the text of docs/spec.md."""
    lines = [
        "# Study spec keys",
        "",
        "Generated from the declarations in `hpo/_spec.py` by `hpo._spec.reference()`; a test checks",
        "that this file matches them. A key left out takes its default; an unknown key is an error.",
        "",
    ]
    for section in SECTION_ORDER:
        if section == "search":
            lines += [
                "## [search.NAME]",
                "",
                "One table per searched key; NAME is one of: " + ", ".join(SEARCHABLE) + ".",
                "A searched key cannot also be fixed in [model] or [training].",
                "",
                "| key | type | rule | meaning |",
                "|---|---|---|---|",
                "| type | string | one of float, int, categorical | how values are drawn |",
                "| low, high | number | finite, low < high; low > 0 when log = true | the range, both ends "
                "included (float and int) |",
                "| log | boolean | true or false (default false) | draw uniformly on a log scale |",
                "| choices | list | a non-empty list of distinct strings, numbers or booleans | the values "
                "(categorical) |",
                "",
            ]
            continue
        trainer = section not in SECTIONS
        columns = ["key", "type", "default", "rule"] + (["searchable"] if trainer else []) + ["meaning"]
        lines += [f"## [{section}]", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
        for k in keys(section):
            if k.required:
                default = "required"
            elif k.default is None:
                default = "left out"
            else:
                default = f"`{_toml_value(k.default)}`"
            cells = [k.name, k.rule.kind, default, k.rule.text] + (["yes" if k.searchable else "no"] if trainer else [])
            lines.append("| " + " | ".join(cells + [k.help]) + " |")
        lines.append("")
    return "\n".join(lines)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a TOML spec file."""
    path = Path(path)
    try:
        # utf-8-sig: editors on Windows may start the file with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
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

    def fail(self, key: str, rule: str, value: Any = dataclasses.MISSING, fix: str | None = "") -> SpecError:
        if isinstance(value, tuple):  # the spec wrote a list
            value = list(value)
        got = "" if value is dataclasses.MISSING else f"; got {value!r}"
        return SpecError(f"{self.source}: {key} {rule}{got}" + (f" ({fix})" if fix else ""))

    def broken(self, where: str, exc: ConfigError) -> SpecError:
        """A rule's ConfigError, said of a spec key."""
        return self.fail(where, f"must be {exc.rule}", exc.value, exc.fix)

    def table(self, document: dict[str, Any], name: str) -> dict[str, Any]:
        value = document.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(f"[{name}]", "must be a table", value)
        return value

    def known(self, table: dict[str, Any], section: str, allowed: tuple[str, ...]) -> None:
        for name in table:
            if name not in allowed:
                raise self.fail(
                    f"[{section}] {name}", "is not a known key", fix="known keys: " + ", ".join(allowed)
                )

    def typed(self, table: dict, section: str, name: str, kind: type | tuple, default: Any) -> Any:
        if name not in table:
            return default
        value = table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        is_bool = isinstance(value, bool)
        if (is_bool and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join({int: "an integer", float: "a number", str: "a string",
                                 bool: "true or false"}[k] for k in kinds)
            raise self.fail(f"[{section}] {name}", f"must be {names}", value)
        return value

    def section(self, document: dict[str, Any], section: str) -> dict[str, Any]:
        """The checked values of one dataclass section's keys, as given (defaults left to the dataclass)."""
        table = self.table(document, section)
        declared = keys(section)
        self.known(table, section, tuple(k.name for k in declared))
        values = {}
        for k in declared:
            if k.name not in table:
                if k.required:
                    raise self.fail(k.label, "is required", fix=f"add {k.name} = {_toml_value(k.example)}")
                continue
            try:
                values[k.name] = k.rule.validate(k.name, table[k.name])
            except ConfigError as exc:
                raise self.broken(k.label, exc) from None
        return values

    def parse(self, document: dict[str, Any]) -> StudySpec:
        if not isinstance(document, dict):
            raise self.fail("spec", "must be a TOML document of tables", document)
        for name in document:
            if name not in SECTION_ORDER:
                raise self.fail(f"[{name}]", "is not a known section", fix="known: " + ", ".join(SECTION_ORDER))

        study = self.section(document, "study")
        data = DataSpec(**self.section(document, "data"))
        self.check_samples(data)
        fixed = self.parse_fixed(document)
        search = self.parse_search(self.table(document, "search"), fixed)
        spec = StudySpec(
            **study, data=data, fixed=fixed, search=search,
            sampler=SamplerSpec(**self.section(document, "sampler")),
            pruner=PrunerSpec(**self.section(document, "pruner")),
            objective=ObjectiveSpec(**self.section(document, "objective")),
        )
        self.check_race(spec)
        return spec

    def check_race(self, spec: StudySpec) -> None:
        """A race reads folds and repeats as its own and stops runs itself: say so when a spec disagrees."""
        objective = spec.objective
        if not objective.raced:
            return
        if objective.folds == 1:
            raise self.fail("[objective] folds", "must be 3 to 20 when method = \"race\" (a race runs one fold "
                            "at a time)", objective.folds, fix="folds = 5 is what docs/search.md measured")
        if spec.pruner.kind != "none":
            raise self.fail("[pruner] kind", "must be \"none\" when [objective] method = \"race\"",
                            spec.pruner.kind, fix="the race stops hopeless runs itself: set [objective] "
                            "prune_margin and prune_epochs")
        if not spec.sampler.multivariate:
            raise self.fail("[sampler] multivariate", "must be true when [objective] method = \"race\"", False,
                            fix="the race's TPE models the parameters jointly, as measured in docs/search.md")
        late = [e for e in objective.prune_epochs if e >= spec.epochs]
        if late:
            raise self.fail("[objective] prune_epochs", f"must be below [training] epochs = {spec.epochs}",
                            list(objective.prune_epochs), fix="use earlier checkpoints, or [] for none")

    def check_samples(self, data: DataSpec) -> None:
        pool = REGISTRY[data.dataset].pool_size
        if data.samples is not None and not 2 <= data.samples <= pool:
            raise self.fail("[data] samples", f"must be in [2, {pool}], the pool size of {data.dataset}",
                            data.samples, fix=f"use at most {pool}, or leave samples out for the whole pool")

    def parse_fixed(self, document: dict[str, Any]) -> dict[str, Any]:
        fixed: dict[str, Any] = {}
        for section, allowed in (("model", MODEL_FIELDS), ("training", TRAINING_FIELDS)):
            table = self.table(document, section)
            self.known(table, section, allowed)
            for name, value in table.items():
                if isinstance(value, dict):
                    raise self.fail(f"[{section}] {name}", "must be a value, not a table",
                                    fix=f"search it with a [search.{name}] table instead")
                try:
                    TRAINER[name].rule.validate(name, value)
                except ConfigError as exc:
                    raise self.broken(f"[{section}] {name}", exc) from None
                # Kept as written (an int stays an int) so that the stored form does not change.
                fixed[name] = tuple(value) if isinstance(value, list) else value
        if "hidden_sizes" in fixed and ({"hidden_layers", "hidden_units"} & fixed.keys()):
            raise self.fail("[model] hidden_sizes", "cannot be combined with hidden_layers/hidden_units")
        return fixed

    def parse_search(self, table: dict[str, Any], fixed: dict[str, Any]) -> tuple[SearchParam, ...]:
        params: list[SearchParam] = []
        for name, body in table.items():
            where = f"[search.{name}]"
            if name not in SEARCHABLE:
                raise self.fail(where, "is not a searchable trainer field",
                                fix="searchable: " + ", ".join(SEARCHABLE))
            if name in fixed:
                raise self.fail(where, "is also fixed in [model] or [training]", fix="keep one of the two")
            if name in ("hidden_layers", "hidden_units") and "hidden_sizes" in fixed:
                raise self.fail(where, "cannot be searched while [model] hidden_sizes is fixed",
                                fix="fix hidden_layers/hidden_units instead")
            if not isinstance(body, dict):
                raise self.fail(where, "must be a table with type = float, int or categorical", body)
            param = self.parse_param(name, body)
            # Every value the search can reach is checked by the key's rule at the ends of its range.
            values = param.choices if isinstance(param, CategoricalParam) else (param.low, param.high)
            for value in values:
                try:
                    TRAINER[name].rule.validate(name, value)
                except ConfigError as exc:
                    raise self.broken(where, exc) from None
            params.append(param)
        return tuple(params)

    def parse_param(self, name: str, body: dict[str, Any]) -> SearchParam:
        where, section = f"[search.{name}]", f"search.{name}"
        kind = body.get("type")
        if kind == "categorical":
            self.known(body, section, ("type", "choices"))
            choices = body.get("choices")
            if not isinstance(choices, list) or not choices:
                raise self.fail(f"{where} choices", "must be a non-empty list", choices)
            if len(set(map(repr, choices))) != len(choices):
                raise self.fail(f"{where} choices", "must not repeat a value", choices)
            for choice in choices:
                if not isinstance(choice, (str, int, float, bool)):
                    raise self.fail(f"{where} choices", "must hold strings, numbers or booleans", choice)
            return CategoricalParam(name, tuple(choices))
        if kind not in ("float", "int"):
            raise self.fail(f"{where} type", "must be float, int or categorical", kind)
        self.known(body, section, ("type", "low", "high", "log"))
        if kind == "float" and isinstance(TRAINER[name].rule, Integer):
            raise self.fail(f"{where} type", "must be int for an integer key", kind, fix='use type = "int"')
        number = (int, float) if kind == "float" else int
        for bound in ("low", "high"):
            if bound not in body:
                raise self.fail(f"{where} {bound}", "is required")
        low = self.typed(body, section, "low", number, None)
        high = self.typed(body, section, "high", number, None)
        log = self.typed(body, section, "log", bool, False)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise self.fail(where, f"low and high must be finite; got low={low!r}, high={high!r}")
        if low >= high:
            raise self.fail(where, f"low must be < high; got low={low!r}, high={high!r}")
        if log and low <= 0:
            raise self.fail(f"{where} low", "must be > 0 when log = true", low,
                            fix="use a positive low such as 1e-8, or log = false")
        if kind == "float":
            return FloatParam(name, float(low), float(high), log)
        return IntParam(name, low, high, log)

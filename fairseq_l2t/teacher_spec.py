"""A teacher from options, and whether a saved teacher fits them: the one home of both for every front end.

The image CLIs (argparse) and fairseq's `l2t_translation` task (a dataclass
config) share one set of option names, `--teacher-structure`,
`--teacher-smoothing`, `--teacher-robustness`, `--teacher-transition`,
`--teacher-rank`, `--teacher-gates`, `--teacher-form`, `--teacher-squash`,
`--teacher-prob-floor`, `--teacher-fixed-scale`, whose values land in
attributes `teacher_structure`, `teacher_smoothing`, ...;
`TeacherSpec.from_options` reads them from either, checks them together
(ValueError naming the options), builds the teacher, and says in words how a
saved teacher's config differs from what a run needs (`teacher_mismatch`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from .loss_structures import WELL_POSED_KINDS, CorrectedStructure, LossStructure, build_structure, resolve_prob_floor
from .teacher import TEACHER_FORMS, Teacher

STRUCTURES = ("dense", "lowrank", *WELL_POSED_KINDS)
_OPTION_PREFIX = "teacher_"


def option(name: str) -> str:
    """The command-line spelling of a spec field: smoothing -> --teacher-smoothing."""
    return "--" + (_OPTION_PREFIX + name).replace("_", "-")


@dataclass(frozen=True)
class TeacherSpec:
    """The teacher's loss family, where it starts, and the teacher's form (see `option` for the flags)."""

    structure: str = "soft_target"
    smoothing: float = 0.0  # a well-posed family starts exactly at label smoothing with this epsilon (0: CE)
    robustness: float = 0.0  # the corrected family starts at the generalised cross-entropy with this q (0: CE)
    transition: tuple[tuple[float, ...], ...] | None = None  # the corrected family starts at this forward correction
    rank: int = 8
    gates: int = 2
    form: str = "gate"
    squash: bool = False
    prob_floor: float | None = None  # None: the structure's default (1e-4 for the bilinear ones, none otherwise)
    fixed_scale: bool = False
    seed: int = 0  # draws the low-rank structures' initial V

    def __post_init__(self):
        if self.structure not in STRUCTURES:
            raise ValueError(f"{option('structure')} {self.structure!r} is not a loss family; choose from "
                             f"{', '.join(STRUCTURES)}")
        if self.form not in TEACHER_FORMS:
            raise ValueError(f"{option('form')} {self.form!r}: choose from {', '.join(TEACHER_FORMS)}")
        for name in ("rank", "gates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{option(name)} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"{option('smoothing')} must be in [0, 1), got {self.smoothing}")
        if not 0 <= self.robustness <= 1:
            raise ValueError(f"{option('robustness')} must be in [0, 1], got {self.robustness}")
        well_posed = self.structure in WELL_POSED_KINDS
        for given, value in ((self.smoothing, f"{option('smoothing')} {self.smoothing}"),
                             (self.fixed_scale, option("fixed_scale"))):
            if given and not well_posed:
                raise ValueError(f"{value} needs a well-posed {option('structure')} ({', '.join(WELL_POSED_KINDS)})")
        for name in ("robustness", "transition"):
            if getattr(self, name) and self.structure != CorrectedStructure.kind:
                raise ValueError(f"{option(name)} needs {option('structure')} {CorrectedStructure.kind}")
        if self.prob_floor is not None and not 0 <= self.prob_floor < 1:
            raise ValueError(f"{option('prob_floor')} must be in [0, 1), got {self.prob_floor}")
        resolve_prob_floor(self.structure, self.squash, self.prob_floor,
                           (option("structure"), option("squash"), option("prob_floor")))

    @classmethod
    def from_options(cls, options: object, **overrides) -> "TeacherSpec":
        """The spec of an argparse namespace or a fairseq config: every `teacher_FIELD` attribute it has, then
        `overrides`.  `teacher_transition` may be a JSON file of C rows (read here) or the rows themselves."""
        values = {f.name: getattr(options, _OPTION_PREFIX + f.name) for f in fields(cls)
                  if getattr(options, _OPTION_PREFIX + f.name, None) is not None}
        values.update(overrides)
        if isinstance(values.get("transition"), (str, Path)):
            values["transition"] = read_transition(values["transition"])
        if values.get("transition") is not None:
            values["transition"] = tuple(tuple(float(v) for v in row) for row in values["transition"])
        return cls(**values)

    def build_structure(self, num_classes: int) -> LossStructure:
        """The loss family at its starting point (ValueError if the transition does not fit `num_classes`)."""
        transition = None if self.transition is None else [list(row) for row in self.transition]
        return build_structure({"kind": self.structure, "num_classes": num_classes, "rank": self.rank,
                                "seed": self.seed, "smoothing": self.smoothing, "fixed_scale": self.fixed_scale,
                                "robustness": self.robustness, "transition": transition})

    def build(self, num_classes: int, feature_names: tuple[str, ...]) -> Teacher:
        """A fresh teacher for `num_classes` classes reading the state features `feature_names`."""
        floor = resolve_prob_floor(self.structure, self.squash, self.prob_floor)
        return Teacher(self.build_structure(num_classes), len(feature_names), self.gates, self.squash,
                       tuple(feature_names), math.log(floor) if floor > 0 else None, self.form)


def read_transition(path: str | Path) -> list[list[float]]:
    """A transition matrix saved as JSON (a list of C rows of C numbers); ValueError in one line otherwise."""
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{option('transition')} {path} cannot be read as JSON ({type(err).__name__}: {err})") from None
    if not (isinstance(rows, list) and rows and all(isinstance(r, list) and len(r) == len(rows) for r in rows)):
        raise ValueError(f"{option('transition')} {path} must hold a square list of rows (C lists of C numbers)")
    return rows


def teacher_mismatch(config: dict, num_classes: int, num_features: int, spec: TeacherSpec | None = None,
                     labels: tuple[str, str] = ("classes", "this dataset")) -> str | None:
    """How a saved teacher's `config` (Teacher.config()) differs from what a run needs, as the end of a sentence
    that starts "the teacher ..." (None when it fits): its number of classes (`labels`: what they are called and
    where they come from), of state features, and with a `spec`, the options that made it (the seed only drew
    initial weights, which the saved ones replace)."""
    theirs = config["structure"]["num_classes"]
    if theirs != num_classes:
        return f"was trained for {theirs} {labels[0]} but {labels[1]} has {num_classes}"
    if config["num_features"] != num_features:
        return (f"reads {config['num_features']} state features but this run provides {num_features} (another "
                f"set of state features)")
    if spec is None:
        return None
    wanted = spec.build(num_classes, tuple(f"f{i}" for i in range(num_features))).config()
    for key, name in (("num_gates", "gates"), ("squash", "squash"), ("form", "form")):
        if config.get(key, "gate" if key == "form" else None) != wanted[key]:
            return f"has {option(name)} {config.get(key)} but this run asks for {wanted[key]}"
    saved = {k: v for k, v in build_structure(config["structure"]).config().items() if k != "seed"}
    if saved != {k: v for k, v in wanted["structure"].items() if k != "seed"}:
        return (f"uses loss structure {config['structure']} but this run asks for {wanted['structure']}; match "
                f"{option('structure')}, {option('smoothing')}, {option('rank')} (and the other --teacher-* "
                f"options) to that run")
    return None

"""What a corrected-family teacher handed out over a taught student's training, read back from its run folder.

The taught student's OUT/loss_trace.pt holds the loss parameters phi at every dev evaluation; its
checkpoint holds the teacher's config, which rebuilds the structure that turns phi into q, eps, T and a.
Both the teacher's picture and the noisy table's rows read it here.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import torch

from fairseq_l2t.loss_structures import CorrectedStructure


def read_corrected_trace(taught: str | Path) -> tuple[list[int], CorrectedStructure, list[dict]]:
    """(steps, structure, phis) of a run taught by the corrected family (ValueError for another family)."""
    from fairseq_l2t.teacher import Teacher  # the core's teacher rebuilds the structure of the run's checkpoint

    taught = Path(taught)
    teacher = Teacher.from_config(torch.load(taught / "checkpoint.pt", map_location="cpu",
                                             weights_only=True)["teacher"]["config"])
    structure = teacher.structure
    if structure.kind != "corrected":
        raise ValueError(f"{taught} was taught by the {structure.kind} family; this reads the corrected one")
    trace = torch.load(taught / "loss_trace.pt", map_location="cpu", weights_only=True)["snapshots"]
    return [s["step"] for s in trace], structure, [{k: v.double() for k, v in s["phi"].items()} for s in trace]


def handed_out(taught: str | Path) -> dict[str, float]:
    """The mean over training of the robustness q, smoothing eps, corrected mass (1 - mean diagonal of T) and
    loss scale a that the teacher handed out: what it learned, in four numbers."""
    _, structure, phis = read_corrected_trace(taught)
    series = {"q": [float(structure.robustness_of(phi)) for phi in phis],
              "eps": [float(structure.mass_and_scale(phi)[0]) for phi in phis],
              "corrected_mass": [float(1 - structure.transition_matrix(phi).diagonal().mean()) for phi in phis],
              "scale": [float(structure.mass_and_scale(phi)[1]) for phi in phis]}
    return {name: statistics.mean(values) for name, values in series.items()}

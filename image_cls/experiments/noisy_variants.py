"""The teacher protocols of the noisy-label ablation, by name, judged on dev only.

Each changes some choices of the noisy comparison's default teacher
(image_cls/experiments/noisy_comparison.py: the corrected family started at
forward_glc's loss, gate form, the calibrated dev cross-entropy reward on the
reward half, 500-step episodes along one student, which is the one reported
(kept), Adam 1e-2); its teacher and taught-student runs live in folders named
after it (teacher-NAME, l2t_dlf-NAME) beside the baselines'.
"""
from __future__ import annotations

NOISY_VARIANTS: dict[str, tuple[str, dict]] = {  # name: (what changes, NoisyConfig overrides)
    "": ("default: corrected family started at forward_glc's loss, 500-step episodes, 1 round, calibrated dev "
         "cross-entropy reward, teacher Adam 1e-2; the reported student is the teacher run's own (kept), taught "
         "while the teacher learned", {}),
    "ce-reward": ("rewarded with the plain dev cross-entropy (it also pays for confidence, so it pushes the "
                  "robustness q and the smoothing towards 0)", {"dev_objective": "cross_entropy"}),
    "from-ce": ("starts at cross-entropy (T = I, q = 0): the teacher finds the correction itself; Adam 3e-2",
                {"teacher_base": "ce", "teacher_lr": 3e-2}),
    "from-best": ("starts at the family's member baseline (ce, tuned label smoothing, tuned GCE or GLC) with the "
                  "seed's lowest selection-half error, and the guard keeps that one unless the taught student beats "
                  "it", {"teacher_base": "best"}),
    "fixed-scale": ("no loss scale (a = 1): the teacher shapes the targets, the robustness and the correction but "
                    "cannot act as a learning-rate factor, which a 500-step lookahead rewards though it hurts later",
                    {"teacher_args": ("--teacher-fixed-scale",)}),
    "fresh-student": ("the paper's protocol: l2t_dlf's student is a fresh one taught by the finished teacher, "
                      "instead of the teacher run's own (kept) student; a fresh student meets early in training a "
                      "teacher last rewarded late in training", {"student": "fresh"}),
}

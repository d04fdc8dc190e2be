"""The teacher protocols that the ablation compares and a results table can run, by name.

Each variant changes some choices of the comparison's default teacher
(image_cls/comparison.py: soft_target family, gate form, base
label_smoothing_tuned, dev cross-entropy reward on the reward half of dev,
50-step episodes, Adam 1e-2); its teacher and taught-student runs live in
folders named after it (teacher-NAME, l2t_dlf-NAME) beside the baselines'.
"""
from __future__ import annotations

_WHOLE = {"episode_steps": None, "teacher_rounds": 8, "teacher_lr": 3e-2,
          "extra_teacher_args": ["--engine", "checkpointed", "--snapshots", "128"]}

TEACHER_VARIANTS: dict[str, tuple[str, dict]] = {  # name: (what changes, ComparisonConfig overrides)
    "": ("default: soft_target family, gate form, base label_smoothing_tuned, dev cross-entropy reward, "
         "teacher Adam lr 1e-2", {}),
    "smooth-error": ("reward: the demo's smooth 0-1 error (k = 50) instead of dev cross-entropy",
                     {"dev_objective": "smooth_error"}),
    "expected-error": ("reward: expected error 1 - p_y (cannot be lowered by flattening the student)",
                       {"dev_objective": "expected_error"}),
    "lr1e-3": ("teacher lr 1e-3 instead of 1e-2", {"teacher_lr": 1e-3}),
    "attention": ("attention form (softmax mix of 2 loss sets) instead of tanh gates", {"teacher_form": "attention"}),
    "smoothing": ("low-capacity family: one smoothing mass and one loss scale", {"structure": "smoothing"}),
    "students2": ("each teacher update averages the hypergradients of 2 students trained side by side",
                  {"extra_teacher_args": ["--students", "2"]}),
    "horizon500": ("500-step episodes (checkpointed engine, 8 snapshots) instead of 50-step ones",
                   {"episode_steps": 500, "extra_teacher_args": ["--engine", "checkpointed"]}),
    "calibrated": ("reward: dev cross-entropy at the temperature that minimises it (blind to confidence)",
                   {"dev_objective": "calibrated_cross_entropy"}),
    "fixed-scale": ("no loss scale: the teacher shapes the targets only (--fixed-loss-scale)",
                    {"extra_teacher_args": ["--fixed-loss-scale"]}),
    "calibrated-fixed-scale": ("both: calibrated reward and no loss scale",
                               {"dev_objective": "calibrated_cross_entropy",
                                "extra_teacher_args": ["--fixed-loss-scale"]}),
    "whole-horizon": ("one episode spans the whole student training (checkpointed engine, 128 snapshots), "
                      "8 rounds (8 teacher updates) at teacher lr 3e-2",
                      _WHOLE),
    "whole-horizon-calibrated": ("whole-horizon, rewarded with the calibrated dev cross-entropy",
                                 {**_WHOLE, "dev_objective": "calibrated_cross_entropy"}),
    "whole-horizon-calibrated-from-ce": ("whole-horizon-calibrated, starting at cross-entropy instead of the tuned "
                                         "label smoothing: does one teacher run find what the epsilon grid finds?",
                                         {**_WHOLE, "dev_objective": "calibrated_cross_entropy", "teacher_base": "ce"}),
    "confusion": ("state: the student's running soft confusion between classes added to the features "
                  "(--state-features confusion, 90 more)", {"extra_teacher_args": ["--state-features", "confusion"]}),
    "bilinear": ("the paper's bilinear family (dense W, probability floor 1e-4), base cross-entropy",
                 {"structure": "dense", "teacher_base": "ce"}),
}

"""The noisy-label comparison end to end on MNIST-5k (tiny budget): every method's run, tuned grids chosen on the
selection half, the guard's paired decision, and the table's paired differences."""
import json

import pytest
import torch

from image_cls.experiments import noisy_comparison
from image_cls.experiments.noisy_comparison import (NoisyConfig, format_table, format_teacher_rows,
                                                    paired_differences, run_noisy_comparison, summarise)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    config = NoisyConfig(dataset="mnist5k", noise="asymmetric:0.4", seeds=(0, 1), steps=40, episode_steps=20,
                         eval_every=10, dev_per_class=20, ls_grid=(0.1, 0.3), gce_grid=(0.5, 0.7), lr=0.05)
    out = tmp_path_factory.mktemp("noisy")
    lines = []
    first = run_noisy_comparison(config, out, report=lines.append)
    config.reuse = True
    again = run_noisy_comparison(config, out, report=lambda line: None)  # every run read back, none redone
    assert again == first
    return first, lines, out


def test_every_method_has_a_row_per_seed_with_its_dev_selected_and_final_errors(rows):
    rows, lines, out = rows
    assert sorted((r["method"], r["seed"]) for r in rows) == sorted(
        (m, s) for m in noisy_comparison.METHODS for s in (0, 1))
    for r in rows:
        assert 0 <= r["test_error"] <= 1 and 0 <= r["final_test_error"] <= 1 and r["selected_step"] % 10 == 0
        assert r["noise"] == "asymmetric:0.4" and 0.1 < r["noisy_share"] < 0.3
    tuned = {r["method"]: r for r in rows if r["method"] in ("label_smoothing_tuned", "gce_tuned")}
    assert tuned["label_smoothing_tuned"]["epsilon"] in (0.1, 0.3) and tuned["gce_tuned"]["q"] in (0.5, 0.7)
    assert any("chosen on the selection half" in line for line in lines)
    assert (out / "asymmetric_0.4" / "mlp" / "seed0" / "forward_glc" / "transition.json").is_file()


def test_the_guard_follows_the_paired_test_on_the_selection_half(rows):
    rows, lines, _ = rows
    for r in (r for r in rows if r["method"] == "l2t_dlf"):
        p = noisy_comparison.mcnemar_one_sided(r["taught_only_right"], r["base_only_right"])
        assert r["guard_p_value"] == p and r["kept_base"] == (not p < 0.05)
        base = next(b for b in rows if b["method"] == "forward_glc" and b["seed"] == r["seed"])
        if r["kept_base"]:
            assert r["test_error"] == base["test_error"]
        else:
            assert r["test_error"] == r["taught_test_error"]
    assert sum("McNemar" in line for line in lines) == 2
    for r in (r for r in rows if r["method"] == "l2t_dlf"):  # what the teacher handed out, as means over training
        h = r["handed_out"]
        assert 0 <= h["q"] <= 1 and 0 <= h["eps"] <= 1 and 0 <= h["corrected_mass"] < 1 and h["scale"] > 0
        assert h["corrected_mass"] > 0  # it starts at GLC's estimate, which credits some mass to other labels
    assert format_teacher_rows(rows).count("| asymmetric:0.4 | mlp |") == 2


def test_a_teacher_from_best_starts_at_and_is_guarded_by_the_seeds_selection_best_member(rows):
    rows, _, out = rows
    config = NoisyConfig(dataset="mnist5k", noise="asymmetric:0.4", seeds=(0, 1), steps=40, episode_steps=20,
                         eval_every=10, dev_per_class=20, ls_grid=(0.1, 0.3), gce_grid=(0.5, 0.7), lr=0.05,
                         teacher_base="best", variant="from-best", methods=("l2t_dlf",), reuse=True)
    taught = run_noisy_comparison(config, out, report=lambda line: None)  # the baselines are read back
    assert [r["method"] for r in taught] == ["l2t_dlf", "l2t_dlf"]
    starts = {"ce": (0.0, 0.0), "forward_glc": (0.0, 0.0)}
    for r in taught:
        members = {b["method"]: b for b in rows if b["seed"] == r["seed"] and b["method"] in
                   noisy_comparison.MEMBER_BASELINES}
        best = min(noisy_comparison.MEMBER_BASELINES, key=lambda m: members[m]["selection_dev_error"])
        assert r["base"] == best
        assert r["test_error"] == (members[best] if r["kept_base"] else r)[
            "test_error" if r["kept_base"] else "taught_test_error"]
        args = torch.load(out / "asymmetric_0.4" / "mlp" / f"seed{r['seed']}" / "teacher-from-best" / "teacher.pt",
                          weights_only=False)["args"]
        smoothing, robustness = starts.get(best, (members[best].get("epsilon", 0.0), members[best].get("q", 0.0)))
        assert (args["teacher_smoothing"] or 0.0, args["teacher_robustness"] or 0.0) == (smoothing, robustness)
        assert (args["teacher_transition"] is not None) == (best == "forward_glc")


def test_the_fixed_scale_protocol_trains_a_teacher_without_a_loss_scale(rows):
    _, _, out = rows
    from image_cls.experiments.noisy_variants import NOISY_VARIANTS

    config = NoisyConfig(dataset="mnist5k", noise="asymmetric:0.4", seeds=(0,), steps=40, episode_steps=20,
                         eval_every=10, dev_per_class=20, ls_grid=(0.1, 0.3), gce_grid=(0.5, 0.7), lr=0.05,
                         variant="fixed-scale", methods=("l2t_dlf",), reuse=True, **NOISY_VARIANTS["fixed-scale"][1])
    (taught,) = run_noisy_comparison(config, out, report=lambda line: None)
    saved = torch.load(out / "asymmetric_0.4" / "mlp" / "seed0" / "teacher-fixed-scale" / "teacher.pt",
                       weights_only=False)["teacher"]
    assert saved["config"]["structure"]["fixed_scale"] and not any("log_scale" in k for k in saved["state"])
    assert taught["base"] == "forward_glc" and taught["handed_out"]["scale"] == pytest.approx(1.0, abs=1e-12)


def test_the_kept_student_is_guarded_and_reported_beside_the_fresh_one(rows):
    base_rows, _, out = rows
    from image_cls.experiments.noisy_variants import NOISY_VARIANTS

    for r in (r for r in base_rows if r["method"] == "l2t_dlf"):  # the default: the teacher run's own student
        seed = out / "asymmetric_0.4" / "mlp" / f"seed{r['seed']}"
        kept = json.loads((seed / "teacher" / "student" / "summary.json").read_text())
        fresh = json.loads((seed / "l2t_dlf" / "summary.json").read_text())
        assert r["student"] == "kept" and r["taught_test_error"] == kept["selected"]["test_error"]
        assert r["fresh_test_error"] == fresh["selected"]["test_error"] and r["handed_out_to"] == "kept"
        ours = noisy_comparison.selection_correct(seed / "teacher" / "student")
        theirs = noisy_comparison.selection_correct(seed / "forward_glc")
        assert (r["taught_only_right"], r["base_only_right"]) == (int((ours & ~theirs).sum()),
                                                                  int((theirs & ~ours).sum()))
    config = NoisyConfig(dataset="mnist5k", noise="asymmetric:0.4", seeds=(0,), steps=40, episode_steps=20,
                         eval_every=10, dev_per_class=20, ls_grid=(0.1, 0.3), gce_grid=(0.5, 0.7), lr=0.05,
                         variant="fresh-student", methods=("l2t_dlf",), reuse=True,
                         **NOISY_VARIANTS["fresh-student"][1])
    (taught,) = run_noisy_comparison(config, out, report=lambda line: None)
    default = next(r for r in base_rows if r["method"] == "l2t_dlf" and r["seed"] == 0)
    assert taught["student"] == "fresh" and "fresh_test_error" not in taught and taught["handed_out_to"] == "fresh"
    assert taught["taught_test_error"] == default["fresh_test_error"]  # the same teacher, so the same fresh student
    kept_line, fresh_line = format_teacher_rows([default, taught]).splitlines()[2:]
    assert "| kept |" in kept_line and f"| {100 * default['fresh_test_error']:.2f} |" in kept_line
    assert "| fresh |" in fresh_line and fresh_line.count("|") == kept_line.count("|")


def test_the_table_pairs_l2t_dlf_with_every_baseline(rows):
    rows, _, _ = rows
    paired = paired_differences(rows)
    assert [p["baseline"] for p in paired] == list(noisy_comparison.BASELINES)
    assert all(p["seeds"] == 2 and p["ci95"] is not None for p in paired)
    table = format_table(summarise(rows), paired, paired_differences(rows, key="taught_test_error"))
    assert "l2t_dlf's taught students (no guard)" in table and "| forward_glc |" in table


def test_the_main_job_prints_the_noisy_comparison_and_draws_its_plots(tmp_path, capsys):
    from image_cls.experiments import demo

    demo.main(["--dataset", "mnist5k", "--steps", "40", "--episode-steps", "20", "--eval-every", "10",
               "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert "| asymmetric:0.4 | mlp | l2t_dlf" in out and "L2T-DLF minus" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert {s["method"] for s in results["summary"]} == set(noisy_comparison.METHODS)
    assert {r["seed"] for r in results["rows"]} == {0}
    for png in ("results_ce_curves.png", "results_teacher.png"):
        assert (tmp_path / png).stat().st_size > 10_000

"""The NMT results script's bookkeeping: which runs it plans, which teacher a reused run loads, and the
degeneration measure it reports (the runs themselves take hours: scripts/nmt_demo.py --reuse)."""
import argparse
import json
import math
import statistics
import threading
import time

import pytest

from fairseq_l2t.nmt import table as nmt_demo


def test_repeated_4gram_share_counts_repeats_within_a_hypothesis_only():
    assert nmt_demo.repeated_4gram_share(["a b c d e", "a b c d"]) == 0.0  # repeats across sentences do not count
    # "the the the the the the": 3 four-grams, all the same: 2 repeats
    assert nmt_demo.repeated_4gram_share(["the the the the the the"]) == pytest.approx(2 / 3)
    assert nmt_demo.repeated_4gram_share(["too short", ""]) == 0.0


def test_a_reused_teacher_always_comes_from_another_seeds_online_run():
    assert nmt_demo.reused_from(1, [1, 2]) == 2 and nmt_demo.reused_from(2, [1, 2]) == 1
    assert nmt_demo.reused_from(7, [3, 5, 7]) == 3
    with pytest.raises(SystemExit, match="at least two --seeds"):
        nmt_demo.reused_from(1, [1])


def test_the_plan_trains_every_online_teacher_before_a_run_reuses_it():
    args = argparse.Namespace(models=["transformer", "lstm"], seeds=[1, 2], protocols=["online", "reused"],
                              lstm_protocol="online", ls_grid=[0.05])
    runs = nmt_demo.plan(args)
    assert len(runs) == len(set(runs)) == 2 * 4 + 3 + 2
    # the tuning grid's baselines come last: a table cut short has the teacher's own comparison
    assert runs[-2:] == [("transformer", "label_smoothing_0.05", "fixed", 1),
                         ("transformer", "label_smoothing_0.05", "fixed", 2)]
    assert runs[:3] == [("transformer", "ce", "fixed", 1), ("transformer", "label_smoothing", "fixed", 1),
                        ("transformer", "l2t_dlf", "online", 1)]  # one seed's comparison first
    for model, loss, protocol, seed in runs:
        if protocol == "reused":
            teacher = (model, "l2t_dlf", "online", nmt_demo.reused_from(seed, args.seeds))
            assert runs.index(teacher) < runs.index((model, loss, protocol, seed))
    assert [r for r in runs if r[0] == "lstm"] == [("lstm", "ce", "fixed", 1), ("lstm", "label_smoothing", "fixed", 1),
                                                   ("lstm", "l2t_dlf", "online", 1)]
    # an LSTM taught by a reused teacher gets that teacher's online run on the next seed
    args.lstm_protocol = "reused"
    lstm = [r for r in nmt_demo.plan(args) if r[0] == "lstm"]
    assert lstm[2:] == [("lstm", "l2t_dlf", "online", 2), ("lstm", "l2t_dlf", "reused", 1)]


def test_concurrent_runs_wait_for_the_teacher_they_reuse_and_never_exceed_the_jobs(tmp_path):
    args = argparse.Namespace(models=["transformer", "lstm"], seeds=[1, 2], protocols=["online", "reused"],
                              lstm_protocol="reused", ls_grid=[])
    runs = nmt_demo.plan(args)
    lock, events, in_flight = threading.Lock(), [], [0]

    def work(run):
        with lock:
            in_flight[0] += 1
            events.append(("start", run, in_flight[0]))
        time.sleep(0.01 if run[2] == "online" else 0.001)  # online teachers finish last if nothing waits for them
        with lock:
            in_flight[0] -= 1
            events.append(("end", run, in_flight[0]))
        return {"run": run}

    rows = {}
    nmt_demo.execute(runs, args.seeds, 3, work, lambda index, row: rows.__setitem__(index, row))
    assert {i: r["run"] for i, r in rows.items()} == dict(enumerate(runs))  # every run once, under its plan index
    assert max(n for kind, _, n in events if kind == "start") == 3
    for i, (kind, run, _) in enumerate(events):
        if kind == "start" and nmt_demo.needs(run, args.seeds) is not None:
            assert ("end", nmt_demo.needs(run, args.seeds)) in [(k, r) for k, r, _ in events[:i]]
    with pytest.raises(SystemExit, match="not planned"):
        nmt_demo.execute([("transformer", "l2t_dlf", "reused", 1)], [1, 2], 2, work, lambda index, row: None)


def test_the_surrogate_correlation_is_nan_where_it_is_undefined():
    rising = [[1000, 1.0, 0.02], [2000, 3.0, 0.03], [3000, 4.0, 0.05]]
    assert nmt_demo.correlation(rising) == pytest.approx(statistics.correlation([1.0, 3.0, 4.0], [0.02, 0.03, 0.05]))
    assert math.isnan(nmt_demo.correlation(rising[:2]))
    assert math.isnan(nmt_demo.correlation([[u, 0.0, e] for u, _, e in rising]))  # nothing translated yet


def test_a_table_cut_short_says_how_many_of_the_planned_runs_it_holds(tmp_path):
    args = argparse.Namespace(out=tmp_path / "results" / "nmt", runs=tmp_path / "runs", data_bin=tmp_path / "bin",
                              vocab=4000, updates=9000, max_tokens=2000, beam=4, teacher_interval=10,
                              teacher_structure="soft_target_lowrank", device="cpu")
    row = {"model": "transformer", "loss": "ce", "protocol": "fixed", "seed": 1, "updates": 9000, "valid_bleu": 7.01,
           "test_bleu": 6.44,
           "train_nll": 4.21, "minutes": 68.7, "repeated_4grams": 0.013,
           "valid_bleu_curve": [[1500, 2.0, 0.03], [3000, 4.7, 0.04], [4500, 5.4, 0.05]]}
    text, plot = nmt_demo.write_outputs([row], 11, args)
    assert text.startswith("**Partial: 1 of the 11 planned runs so far.**")
    assert "| transformer | ce | fixed | 1 | 7.01 | 6.44 |" in text
    assert plot is None  # no online teacher yet
    saved = json.loads((tmp_path / "results" / "nmt.json").read_text())
    assert saved == {"rows": [row], "planned_runs": 11}
    text, _ = nmt_demo.write_outputs([row], 1, args)
    assert not text.startswith("**Partial")


def test_the_table_pairs_each_loss_with_ce_and_label_smoothing_on_the_seeds_both_have():
    args = argparse.Namespace(vocab=4000, updates=9000, max_tokens=2000, beam=4, teacher_interval=10,
                              teacher_structure="smoothing", device="cpu")

    def row(loss, protocol, seed, test):
        return {"model": "transformer", "loss": loss, "protocol": protocol, "seed": seed, "valid_bleu": 7.0,
                "test_bleu": test, "train_nll": 4.2, "minutes": 50.0, "repeated_4grams": 0.01}

    rows = [row("ce", "fixed", 1, 6.0), row("ce", "fixed", 2, 7.0), row("label_smoothing", "fixed", 1, 6.5),
            row("l2t_dlf", "online", 1, 7.0), row("l2t_dlf", "online", 2, 7.5), row("l2t_dlf", "reused", 2, 6.0)]
    lines = nmt_demo.table(rows, args).splitlines()
    assert "| 6.00, 7.00 |  | -0.50 |" in lines[2]  # CE against LS on seed 1 only
    assert "| 6.50 | +0.50 |  |" in lines[3]
    assert "| 7.00, 7.50 | +0.75 | +0.50 |" in lines[4]  # vs CE over both seeds, vs LS over seed 1, the one LS has
    assert "| 6.00 | -1.00 |  |" in lines[5]  # no LS on seed 2: no pairing
    assert "Tuned LS" not in nmt_demo.table(rows, args)  # no grid beyond CE and 0.1: nothing was tuned


def test_the_tuned_label_smoothing_is_the_fixed_loss_with_the_best_mean_valid_bleu():
    args = argparse.Namespace(vocab=4000, updates=9000, max_tokens=2000, beam=4, teacher_interval=10,
                              teacher_structure="smoothing", device="cpu")

    def row(loss, protocol, seed, valid, test):
        return {"model": "transformer", "loss": loss, "protocol": protocol, "seed": seed, "valid_bleu": valid,
                "test_bleu": test, "train_nll": 4.2, "minutes": 50.0, "repeated_4grams": 0.01}

    rows = [row("ce", "fixed", 1, 7.0, 6.0), row("ce", "fixed", 2, 7.0, 6.0),
            row("label_smoothing", "fixed", 1, 6.8, 9.0), row("label_smoothing", "fixed", 2, 6.8, 9.0),
            {**row("ce", "fixed", 1, 5.0, 4.6), "model": "lstm"},  # finished before the grid, shown after it
            row("label_smoothing_0.05", "fixed", 1, 7.3, 6.5), row("label_smoothing_0.05", "fixed", 2, 6.9, 6.7),
            row("l2t_dlf", "online", 1, 9.0, 7.0), row("l2t_dlf", "online", 2, 9.0, 7.0)]  # the teacher is no choice
    assert nmt_demo.tuned_smoothing(rows) == {"transformer": "label_smoothing_0.05"}  # 7.1 against 7.0 and 6.8:
    text = nmt_demo.table(rows, args)                                                 # valid chose, not test
    assert "Tuned LS, transformer: epsilon 0.05, the best mean valid BLEU of 0, 0.05, 0.1 (0: CE)." in text
    lines = text.splitlines()
    assert "| 6.00, 6.00 |  | -3.00 | -0.60 |" in lines[2]
    assert "| 6.50, 6.70 | +0.60 | -2.40 |  |" in lines[4]  # the tuned row itself: nothing to pair
    assert "| 7.00, 7.00 | +1.00 | -2.00 | +0.40 |" in lines[5]
    assert lines[6].startswith("| lstm | ce |") and "| 4.60 |  |  |  | 4.20 |" in lines[6]  # no grid: no tuning
    assert nmt_demo.loss_flags("label_smoothing_0.05")[-2:] == ["--label-smoothing", "0.05"]
    assert nmt_demo.loss_flags("label_smoothing") == nmt_demo.LOSSES["label_smoothing"]


def test_the_teacher_plot_band_holds_the_middle_80_percent_of_tokens():
    import torch
    values = torch.tensor([0.0, 0.1, 0.5, 1.0])
    mean, low, high = nmt_demo._mean_and_band(values, torch.tensor([5.0, 80.0, 10.0, 5.0]))
    assert mean == pytest.approx(0.0 * 0.05 + 0.1 * 0.8 + 0.5 * 0.1 + 1.0 * 0.05)
    assert (low, high) == (pytest.approx(0.1), pytest.approx(0.5))  # 5 % of tokens at 0 and at 1 fall outside
    assert nmt_demo._mean_and_band(values, torch.tensor([50.0, 0.0, 0.0, 50.0]))[1:] == (0.0, 1.0)


def test_a_finished_run_is_not_trained_again(tmp_path):
    """fairseq resumed at --max-update takes one more update; the script reads how far a checkpoint got."""
    import torch
    assert nmt_demo.trained_updates(tmp_path / "checkpoint_last.pt") == 0
    torch.save({"optimizer_history": [{"num_updates": 4500}, {"num_updates": 9000}]}, tmp_path / "checkpoint_last.pt")
    assert nmt_demo.trained_updates(tmp_path / "checkpoint_last.pt") == 9000

"""The paired bootstrap behind results/nmt_ding_bootstrap.md: it reads fairseq-generate logs and measures
BLEU differences the way fairseq-generate scores them."""
import json
from pathlib import Path

import pytest
from sacrebleu.metrics import BLEU

from fairseq_l2t.nmt import bleu_bootstrap as nmt_bleu_bootstrap

REFS = ["the cat sat on the mat today", "a dog ran into the old house", "we went home late at night",
        "she reads a long book every week", "the train left the station on time", "he drinks his tea without sugar"]
WORSE = ["the cat sat the mat", "a dog ran the house", "we home late night", "she reads book every",
         "the train left on time", "he drinks tea without"]


def generate_log(path: Path, refs: list[str], hyps: list[str]) -> Path:
    """A fairseq-generate log: S/T/H/D lines per sentence, in the order sentences finish (not by id)."""
    lines = ["Generate test with beam=4: BLEU = 0.00"]
    for i in reversed(range(len(refs))):
        lines += [f"S-{i}\tsource {i}", f"T-{i}\t{refs[i]}", f"H-{i}\t-0.5\t{hyps[i]}", f"D-{i}\t-0.5\t{hyps[i]}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_log_is_read_back_in_sentence_id_order(tmp_path):
    refs, hyps = nmt_bleu_bootstrap.decoded(generate_log(tmp_path / "test.log", REFS, WORSE))
    assert refs == REFS and hyps == WORSE
    (tmp_path / "cut.log").write_text(f"T-0\t{REFS[0]}\nT-1\t{REFS[1]}\nD-0\t-0.5\t{WORSE[0]}\n")
    with pytest.raises(SystemExit, match="not a complete fairseq-generate log"):
        nmt_bleu_bootstrap.decoded(tmp_path / "cut.log")


def test_the_difference_is_the_corpus_bleu_difference_and_its_interval_holds_it():
    result = nmt_bleu_bootstrap.paired_bootstrap(REFS, REFS, WORSE, samples=200, seed=0)
    expected = BLEU().corpus_score(REFS, [REFS]).score - BLEU().corpus_score(WORSE, [REFS]).score
    assert result["difference"] == pytest.approx(expected)
    low, high = result["interval_95"]
    assert 0 < low <= expected <= high  # the references beat a worse system on every resample
    assert result["share_ahead"] == 1.0
    same = nmt_bleu_bootstrap.paired_bootstrap(REFS, WORSE, WORSE, samples=50, seed=0)
    assert same == {"difference": 0.0, "interval_95": [0.0, 0.0], "share_ahead": 0.0}


def test_runs_are_paired_with_the_baselines_of_their_own_model_and_seed(tmp_path):
    systems = {("ce", "fixed", 1): WORSE, ("label_smoothing", "fixed", 1): WORSE, ("l2t_dlf", "online", 1): REFS,
               ("l2t_dlf", "online", 2): REFS}  # seed 2 has no baseline: nothing to pair it with

    def add(loss, protocol, seed, hyps, valid_bleu):
        folder = tmp_path / f"transformer-{loss}-{protocol}-seed{seed}"
        folder.mkdir()
        for split in nmt_bleu_bootstrap.SPLITS:
            generate_log(folder / f"{split}.log", REFS, hyps)
        (folder / "row.json").write_text(json.dumps({"model": "transformer", "loss": loss, "protocol": protocol,
                                                     "seed": seed, "valid_bleu": valid_bleu}))

    for (loss, protocol, seed), hyps in systems.items():
        add(loss, protocol, seed, hyps, 5.0)
    pairs = {("label_smoothing", 1, "valid", "ce"), ("label_smoothing", 1, "test", "ce"),
             ("l2t_dlf", 1, "valid", "ce"), ("l2t_dlf", 1, "test", "ce"),
             ("l2t_dlf", 1, "valid", "label_smoothing"), ("l2t_dlf", 1, "test", "label_smoothing")}
    entries = nmt_bleu_bootstrap.compare(tmp_path, samples=20, seed=0)
    assert {(e["loss"], e["seed"], e["split"], e["base"]) for e in entries} == pairs
    add("label_smoothing_0.05", "fixed", 1, WORSE, 6.0)  # a grid epsilon with the best valid BLEU: the tuned base
    tuned = {(loss, 1, split, "label_smoothing_0.05") for loss in ("label_smoothing", "l2t_dlf") for split in
             nmt_bleu_bootstrap.SPLITS}
    grid = {("label_smoothing_0.05", 1, split, base) for split in nmt_bleu_bootstrap.SPLITS
            for base in ("ce", "label_smoothing")}
    assert {(e["loss"], e["seed"], e["split"], e["base"])
            for e in nmt_bleu_bootstrap.compare(tmp_path, samples=20, seed=0)} == pairs | tuned | grid
    assert all(e["difference"] > 0 for e in entries if e["loss"] == "l2t_dlf")
    assert "| transformer | l2t_dlf | online | 1 | test | ce |" in nmt_bleu_bootstrap.markdown(entries, 20)

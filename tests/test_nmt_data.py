"""Tests for the NMT corpora (fairseq_l2t/nmt, run through scripts/nmt_data): the Bible reader and fixture, the Ding extractor, binarize.py."""
import importlib.util
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from fairseq_l2t.nmt import extract_bible

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "nmt_data"
FIXTURE = ROOT / "tests" / "fixtures" / "bible_es_en"

SPLIT_SIZES = {"train": 300, "valid": 60, "test": 60}


def run_script(name, *args):
    return subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def read_lines(path):
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("split", sorted(SPLIT_SIZES))
def test_bible_fixture_is_aligned_plain_text(split):
    es, en = read_lines(FIXTURE / f"{split}.es"), read_lines(FIXTURE / f"{split}.en")
    assert len(es) == len(en) == SPLIT_SIZES[split]
    for line in es + en:
        assert line.strip() == line and line, "empty line or stray whitespace"
        assert not any(c in line for c in "<>&\u00b6"), f"markup left in {line!r}"
        assert len(line.split()) <= 20


def test_bible_fixture_splits_are_disjoint():
    seen = [set(zip(read_lines(FIXTURE / f"{s}.es"), read_lines(FIXTURE / f"{s}.en"))) for s in SPLIT_SIZES]
    assert sum(map(len, seen)) == len(set.union(*seen)) == sum(SPLIT_SIZES.values())


def write_ztext(folder, testament, verses):
    """Write a zText testament: two verses per zlib block, '' as an empty slot."""
    blocks, index = [], b""
    for start in range(0, len(verses), 2):
        raw = b""
        for verse in verses[start:start + 2]:
            data = verse.encode("utf-8")
            index += struct.pack("<IIH", len(blocks), len(raw), len(data))
            raw += data
        blocks.append(raw)
    folder.mkdir(parents=True, exist_ok=True)
    bzz, bzs = b"", b""
    for raw in blocks:
        packed = zlib.compress(raw)
        bzs += struct.pack("<III", len(bzz), len(packed), len(raw))
        bzz += packed
    for suffix, data in (("bzs", bzs), ("bzz", bzz), ("bzv", index)):
        (folder / f"{testament}.{suffix}").write_bytes(data)


def test_bible_reader_decodes_ztext_strips_markup_and_skips_empty_slots_and_repeats(tmp_path):
    write_ztext(tmp_path / "es", "ot", ['<title type="main">Génesis</title>', '<w lemma="x">EN el</w> principio.',
                                        "¿<w>Quién</w> &amp; yo?", "Sólo en español."])
    write_ztext(tmp_path / "en", "ot", ['<title level="1" type="main">The First Book</title>',
                                        'In the <w lemma="strong:H1">beginning</w>.<note>Heb. first</note>',
                                        "¶ <w>Who</w> &amp; I?", ""])
    write_ztext(tmp_path / "es", "nt", ["<chapter/>", "EN el principio.", "El ve<w>rbo</w>."])
    write_ztext(tmp_path / "en", "nt", ["<chapter/>", "In the beginning was", "The Word."])
    pairs = extract_bible.aligned_verses(tmp_path, "es", "en")
    assert pairs == [("EN el principio.", "In the beginning."), ("¿Quién & yo?", "Who & I?"),
                     ("El verbo.", "The Word.")]


@pytest.mark.skipif(not (extract_bible.ZTEXT / extract_bible.ENGLISH).is_dir(),
                    reason="needs apt-get install -y sword-text-kjv sword-text-sparv")
def test_bible_reader_aligns_the_real_modules_by_verse():
    pairs = extract_bible.aligned_verses(extract_bible.ZTEXT, extract_bible.SPANISH, extract_bible.ENGLISH)
    assert len(pairs) > 30000
    assert pairs[0] == ("EN el principio crió Dios los cielos y la tierra.",
                        "In the beginning God created the heaven and the earth.")


DING = """\
# Version :: devel 2023-01-30
Haus {n} | Häuser {pl} :: house | houses
Ich gehe nach Hause. [ugs.] | Wir gehen nach Hause! :: I am going home. [coll.] | We are going home!
Die Katze {f} schläft auf dem Sofa.; Die Katze schläft. :: The cat sleeps on the sofa. [zool.]; The cat is asleep.
Wo ist der Bahnhof, bitte? :: Where is the station, please?
wo ist der Bahnhof hier? :: where is the station here?
Sie hat keine Zeit :: She has no time
Gut gemacht! :: Well done!
Wo ist der Bahnhof, bitte? :: Where's the station, please?
Er kommt (vielleicht) morgen an. :: He will (maybe) arrive tomorrow.
Das   Wetter ist heute   schön. :: The weather  is nice today.
Zwei Teile | hier :: only one piece
"""
DING_KEPT = {
    ("Ich gehe nach Hause.", "I am going home."),
    ("Wir gehen nach Hause!", "We are going home!"),
    ("Die Katze schläft auf dem Sofa.", "The cat sleeps on the sofa."),
    ("Wo ist der Bahnhof, bitte?", "Where is the station, please?"),
    ("Er kommt (vielleicht) morgen an.", "He will (maybe) arrive tomorrow."),
    ("Das Wetter ist heute schön.", "The weather is nice today."),
}


def read_split_pairs(folder, src, tgt):
    return {s: list(zip(read_lines(folder / f"{s}.{src}"), read_lines(folder / f"{s}.{tgt}")))
            for s in SPLIT_SIZES}


def test_ding_keeps_cleaned_sentences_and_splits_deterministically(tmp_path):
    source = tmp_path / "de-en"
    source.write_text(DING, encoding="utf-8")
    outputs = []
    for name in ("a", "b"):
        result = run_script("extract_ding.py", tmp_path / name, "--source", source, "--valid", 1, "--test", 2)
        assert result.returncode == 0, result.stderr
        outputs.append(read_split_pairs(tmp_path / name, "de", "en"))
    splits = outputs[0]
    assert outputs[1] == splits
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "valid": 1, "test": 2}
    assert set().union(*splits.values()) == DING_KEPT  # disjoint: 3 + 1 + 2 == 6 distinct pairs
    assert "kept 6 sentence pairs (1 duplicate" in result.stdout

    capped = run_script("extract_ding.py", tmp_path / "c", "--source", source,
                        "--valid", 1, "--test", 2, "--max-train", 2)
    assert capped.returncode == 0, capped.stderr
    assert len(read_lines(tmp_path / "c" / "train.de")) == 2


def test_ding_missing_source_fails_with_one_clear_line(tmp_path):
    result = run_script("extract_ding.py", tmp_path / "out", "--source", tmp_path / "absent")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not found; install it with: apt-get install -y trans-de-en" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("fairseq_cli") is None
                    or importlib.util.find_spec("sentencepiece") is None,
                    reason="needs fairseq and sentencepiece (bash scripts/setup_env.sh)")
def test_binarize_turns_the_fixture_into_fairseq_data_bin(tmp_path):
    dest = tmp_path / "data-bin"
    result = run_script("binarize.py", FIXTURE, dest, "--src", "es", "--tgt", "en", "--vocab-size", 500)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (dest / "dict.es.txt").read_text() == (dest / "dict.en.txt").read_text()
    for split in SPLIT_SIZES:
        for lang in ("es", "en"):
            for suffix in ("bin", "idx"):
                assert (dest / f"{split}.es-en.{lang}.{suffix}").stat().st_size > 0
    import sentencepiece
    model = sentencepiece.SentencePieceProcessor(model_file=str(dest / "spm.model"))
    encoded = [line.split() for line in read_lines(dest / "spm-text" / "train.en")]
    assert [model.decode_pieces(p) for p in encoded] == read_lines(FIXTURE / "train.en")

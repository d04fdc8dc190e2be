#!/usr/bin/env bash
# Download and binarize IWSLT'14 German-English, the paper's NMT benchmark, with
# fairseq's standard recipe (examples/translation/prepare-iwslt14.sh): Moses
# tokenizer, clean (ratio 1.5, 1-175 tokens), lowercase, valid = every 23rd
# train line, test = dev2010 + dev2012 + tst2010..2012, joint BPE with 10k
# merges (subword-nmt), then fairseq-preprocess --joined-dictionary.
# Needs internet, git, perl and curl. Offline, use extract_ding.py instead.
set -euo pipefail

usage() {
    cat <<EOF
usage: $(basename "$0") DESTDIR [WORKDIR]

Download IWSLT'14 De-En, tokenize/clean/lowercase/BPE it as fairseq's recipe
does, and binarize it with fairseq-preprocess into DESTDIR.

  DESTDIR   fairseq data-bin folder to create (must not exist yet)
  WORKDIR   downloads, tools and the tokenized text (default: data/iwslt14-work)

Environment: IWSLT14_URL overrides the tarball address (default: the WIT3
2014-01 archive; fairseq mirrors the same file at
http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz).
EOF
}

die() { echo "error: $*" >&2; exit 1; }

case "${1:-}" in -h|--help) usage; exit 0 ;; "") usage >&2; exit 2 ;; esac
DEST=$1
WORK=${2:-data/iwslt14-work}
URL=${IWSLT14_URL:-https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz}
BPE_TOKENS=10000
src=de
tgt=en
lang=de-en

[ -e "$DEST" ] && die "$DEST already exists; remove it or choose another DESTDIR"
for tool in curl git perl; do
    command -v "$tool" >/dev/null || die "$tool not found; install it (apt-get install -y $tool)"
done

# Fail fast and clearly when offline, before anything is downloaded.
for address in "$URL" https://github.com; do
    host=$(echo "$address" | sed -E 's#^[a-z]+://([^/:]+).*#\1#')
    curl --silent --head --max-time 10 --output /dev/null "$address" ||
        die "cannot reach $host: IWSLT'14 needs internet; offline, use scripts/nmt_data/extract_ding.py"
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=$ROOT/.venv/bin/python
[ -x "$PYTHON" ] || PYTHON=$(command -v python3) || die "python3 not found; run scripts/setup_env.sh"
PREPROCESS=$ROOT/.venv/bin/fairseq-preprocess
[ -x "$PREPROCESS" ] || PREPROCESS=$(command -v fairseq-preprocess) ||
    die "fairseq-preprocess not found; run scripts/setup_env.sh"

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
DEST=$(realpath -m "$DEST")
cd "$WORK"
[ -d mosesdecoder ] || git clone --depth 1 https://github.com/moses-smt/mosesdecoder.git
[ -d subword-nmt ] || git clone --depth 1 https://github.com/rsennrich/subword-nmt.git
SCRIPTS=mosesdecoder/scripts
TOKENIZER=$SCRIPTS/tokenizer/tokenizer.perl
LC=$SCRIPTS/tokenizer/lowercase.perl
CLEAN=$SCRIPTS/training/clean-corpus-n.perl
BPEROOT=subword-nmt/subword_nmt
orig=orig
tmp=iwslt14.tokenized.de-en/tmp
prep=iwslt14.tokenized.de-en
mkdir -p "$orig" "$tmp"

if [ ! -d "$orig/$lang" ]; then
    echo "downloading $URL ..."
    curl --fail --location --output "$orig/de-en.tgz.part" "$URL" ||
        die "download of $URL failed; set IWSLT14_URL to a mirror (see --help)"
    mv "$orig/de-en.tgz.part" "$orig/de-en.tgz"
    tar -xzf "$orig/de-en.tgz" -C "$orig"
fi

echo "pre-processing train data..."
for l in $src $tgt; do
    grep -v -e '<url>' -e '<talkid>' -e '<keywords>' "$orig/$lang/train.tags.$lang.$l" |
        sed -e 's/<title>//g' -e 's/<\/title>//g' -e 's/<description>//g' -e 's/<\/description>//g' |
        perl "$TOKENIZER" -threads 8 -l "$l" > "$tmp/train.tags.$lang.tok.$l"
done
perl "$CLEAN" -ratio 1.5 "$tmp/train.tags.$lang.tok" $src $tgt "$tmp/train.tags.$lang.clean" 1 175
for l in $src $tgt; do
    perl "$LC" < "$tmp/train.tags.$lang.clean.$l" > "$tmp/train.tags.$lang.$l"
done

echo "pre-processing valid/test data..."
for l in $src $tgt; do
    for o in "$orig/$lang"/IWSLT14.TED*."$l".xml; do
        fname=${o##*/}
        grep '<seg id' "$o" |
            sed -e 's/<seg id="[0-9]*">\s*//g' -e 's/\s*<\/seg>\s*//g' -e "s/\’/\'/g" |
            perl "$TOKENIZER" -threads 8 -l "$l" |
            perl "$LC" > "$tmp/${fname%.*}"
    done
done

echo "creating train, valid, test..."
for l in $src $tgt; do
    awk '{ if (NR % 23 == 0) print $0 }' "$tmp/train.tags.$lang.$l" > "$tmp/valid.$l"
    awk '{ if (NR % 23 != 0) print $0 }' "$tmp/train.tags.$lang.$l" > "$tmp/train.$l"
    cat "$tmp/IWSLT14.TED.dev2010.$lang.$l" \
        "$tmp/IWSLT14.TEDX.dev2012.$lang.$l" \
        "$tmp/IWSLT14.TED.tst2010.$lang.$l" \
        "$tmp/IWSLT14.TED.tst2011.$lang.$l" \
        "$tmp/IWSLT14.TED.tst2012.$lang.$l" > "$tmp/test.$l"
done

echo "learning joint BPE ($BPE_TOKENS merges)..."
cat "$tmp/train.$src" "$tmp/train.$tgt" > "$tmp/train.en-de"
"$PYTHON" "$BPEROOT/learn_bpe.py" -s $BPE_TOKENS < "$tmp/train.en-de" > "$prep/code"
for l in $src $tgt; do
    for split in train valid test; do
        "$PYTHON" "$BPEROOT/apply_bpe.py" -c "$prep/code" < "$tmp/$split.$l" > "$prep/$split.$l"
    done
done

echo "binarizing into $DEST ..."
rm -rf "$DEST.tmp"
"$PREPROCESS" --source-lang $src --target-lang $tgt --joined-dictionary \
    --trainpref "$WORK/$prep/train" --validpref "$WORK/$prep/valid" --testpref "$WORK/$prep/test" \
    --destdir "$DEST.tmp" --workers "$(nproc)"
mv "$DEST.tmp" "$DEST"
echo "done: $DEST (tokenized text in $WORK/$prep)"

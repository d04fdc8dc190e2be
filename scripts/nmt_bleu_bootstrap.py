"""Paired bootstrap of the NMT table's BLEU differences over the sentences of valid and test.

The code is fairseq_l2t/nmt/bleu_bootstrap.py; run it with .venv/bin/python (--help lists the options)."""
from fairseq_l2t.nmt.bleu_bootstrap import main

if __name__ == "__main__":
    main()

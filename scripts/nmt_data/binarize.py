"""Turn a plain-text parallel corpus into a fairseq data-bin folder.

The code is fairseq_l2t/nmt/binarize.py; run it with .venv/bin/python (--help lists the options)."""
from fairseq_l2t.nmt.binarize import main

if __name__ == "__main__":
    main()

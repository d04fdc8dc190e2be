"""Extract the Ding German-English sentence pairs into train/valid/test text files.

The code is fairseq_l2t/nmt/extract_ding.py; run it with .venv/bin/python (--help lists the options)."""
from fairseq_l2t.nmt.extract_ding import main

if __name__ == "__main__":
    main()

"""Extract aligned Bible verse pairs (SWORD modules) into train/valid/test text files.

The code is fairseq_l2t/nmt/extract_bible.py; run it with .venv/bin/python (--help lists the options)."""
from fairseq_l2t.nmt.extract_bible import main

if __name__ == "__main__":
    main()

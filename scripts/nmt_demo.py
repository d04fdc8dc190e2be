"""The NMT results table: CE, label smoothing and L2T-DLF on Ding de-en through fairseq's CLIs; resumable.

The code is fairseq_l2t/nmt/table.py; run it with .venv/bin/python (--help lists the options)."""
from fairseq_l2t.nmt.table import main

if __name__ == "__main__":
    main()

"""fairseq-l2t: learning to teach with dynamic loss functions (L2T-DLF).

The teacher core (loss family, teacher, state features, hypergradient
engines, dev objectives) needs only torch.  When fairseq is already loaded,
as under `fairseq-train --user-dir fairseq_l2t`, importing this package also
registers the criterion `l2t_dynamic` and the task `l2t_translation`; other
users (image_cls) do not pay fairseq's import time.
"""
import sys

if "fairseq" in sys.modules:
    from . import fairseq_plugin  # noqa: F401  (registers criterion and task)

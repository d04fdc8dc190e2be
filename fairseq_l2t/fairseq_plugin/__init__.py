"""fairseq registrations: `--criterion l2t_dynamic` and `--task l2t_translation`."""
from . import checkpoint_safety  # noqa: F401  (allow-lists fairseq checkpoint classes)
from . import l2t_dynamic_criterion  # noqa: F401
from . import l2t_translation_task  # noqa: F401
from . import readable_checkpoints  # noqa: F401  (one-line error for a truncated checkpoint)
from .errors import install_excepthook

install_excepthook()

"""fairseq registrations, and everything else that loading the plugin changes in fairseq.

Importing this package (`--user-dir fairseq_l2t`) does four things to the process:

1. registers `--criterion l2t_dynamic` and `--task l2t_translation`;
2. allow-lists fairseq's checkpoint classes (argparse.Namespace, omegaconf
   nodes, numpy scalars) for torch's weights-only unpickler
   (checkpoint_safety.py): torch >= 2.6 refuses fairseq checkpoints otherwise,
   and this is narrower than switching the safety off;
3. wraps `fairseq.checkpoint_utils.load_checkpoint_to_cpu`
   (readable_checkpoints.py): a truncated or corrupt checkpoint is one line
   with the fix, not a traceback.  Once an l2t_translation task is built it
   declares its target dictionary size, and from then on the wrapper also
   refuses, in one line, a checkpoint trained with another dictionary (which
   fairseq would only report deep inside load_state_dict);
4. installs a sys.excepthook (errors.py) that prints an L2TConfigError as
   `fairseq-l2t error: ...` and exits 2; every other exception keeps its
   traceback.
"""
from . import checkpoint_safety  # noqa: F401
from . import l2t_dynamic_criterion  # noqa: F401
from . import l2t_translation_task  # noqa: F401
from . import readable_checkpoints  # noqa: F401
from .errors import install_excepthook

install_excepthook()

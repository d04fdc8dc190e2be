"""One-line errors for configuration mistakes under fairseq's command-line tools.

fairseq-train prints every exception as a traceback.  For L2TConfigError,
raised for bad input that the user can fix, the plugin's exception hook prints
only `fairseq-l2t error: <what is wrong and the fix>` and exits with status 2;
every other exception keeps its traceback.
"""
import sys


class L2TConfigError(ValueError):
    """A user-fixable configuration or input problem."""


class L2TNonFiniteError(L2TConfigError):
    """Teacher training that cannot recover from non-finite values (stopped before saving)."""


def _hook(previous):
    def excepthook(kind, value, traceback):
        if issubclass(kind, L2TConfigError):
            print(f"fairseq-l2t error: {value}", file=sys.stderr)
            sys.exit(2)
        previous(kind, value, traceback)
    return excepthook


def install_excepthook() -> None:
    if not getattr(sys.excepthook, "_l2t", False):
        sys.excepthook = _hook(sys.excepthook)
        sys.excepthook._l2t = True

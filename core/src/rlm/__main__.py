"""``python -m rlm``: the ``rlm`` command, which the ``rlm-cli`` distribution provides.

The kernel does not import the CLI; this entry point looks it up by name when it is run.
"""

import importlib
import sys

try:
    _cli = importlib.import_module("rlm_cli")
except ModuleNotFoundError as exc:
    if exc.name != "rlm_cli":
        raise
    sys.exit("python -m rlm: the rlm command is in the rlm-cli distribution, which is not "
             "installed. Fix: pip install rlm-cli  (or pip install rlm, which includes it)")
raise SystemExit(_cli.main())

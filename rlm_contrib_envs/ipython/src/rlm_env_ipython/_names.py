"""Which names in an IPython namespace are IPython's own, not the model's variables.

Shared by both modes (the in-kernel side imports it too, so it must stay light: stdlib only).
IPython fills the user namespace with its caches (``_``, ``_i3``, ``_7``, ``In``, ``Out``, ...)
and tools (``get_ipython``, ``exit``); ``SHOW_VARS`` and ``CellResult.variables`` list only what
the cells themselves created.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: The input/output caches IPython keeps in the namespace: ``_``, ``__``, ``___``, ``_i``,
#: ``_ii``, ``_iii``, ``_iN``, ``_N``, ``_ih``, ``_oh``, ``_dh`` and ``_exit_code`` (``!cmd``).
CACHE_NAME = re.compile(r"_{1,3}|_i{1,3}|_i?\d+|_ih|_oh|_dh|_exit_code")

#: The custom MIME type of the per-cell summary the kernel publishes (see ``_inkernel``).
SUMMARY_MIME = "application/vnd.rlm.cell+json"


def user_variables(names: Iterable[str], ns: Mapping[str, Any], hidden: Mapping[str, Any]
                   ) -> list[str]:
    """``names`` (already stripped of helpers, dunders and modules) minus IPython's own names.

    A name in ``hidden`` (IPython's ``user_ns_hidden``) is IPython's only while it still holds
    the value IPython put there: a cell that rebinds ``In`` made a variable of its own.
    """
    out = []
    for name in names:
        if CACHE_NAME.fullmatch(name):
            continue
        if name in hidden and ns.get(name) is hidden[name]:
            continue
        out.append(name)
    return out

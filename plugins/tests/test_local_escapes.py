"""The escape suite on the local environment: every attempt of
``rlm_testkit.environments.ESCAPE_ATTEMPTS``. Isolated environments must block all of them; the
local environment lists what it does not block (the same list is in plugins/README.md), and those
attempts are never run.

The escape classes of the isolated environments live next to their conformance classes
(``rlm_contrib_envs/*/tests/``): the kit's guard fails an ``isolated=True`` EnvironmentTests class
whose escape suite does not run in the same session.
"""

from __future__ import annotations

import rlm_plugins.local.plugin
from rlm_testkit.environments import ESCAPE_ATTEMPTS, EscapeTests

_IN_PROCESS = "cells run in the host process with the full builtins: not a security boundary"

LOCAL_NOT_BLOCKED = {a.id: _IN_PROCESS for a in ESCAPE_ATTEMPTS}


class TestLocalEscapes(EscapeTests):
    plugin = rlm_plugins.local.plugin
    environment_name = "local"
    not_blocked = LOCAL_NOT_BLOCKED

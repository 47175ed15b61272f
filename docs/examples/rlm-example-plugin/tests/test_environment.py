"""subrepl passes the conformance kit: every standard environment test."""

from rlm_testkit import EnvironmentTests


class TestSubREPL(EnvironmentTests):
    plugin = "rlm_example.plugin"
    environment_name = "subrepl"
    capabilities = {"callables_as_tools": False}  # tools cross as source code or JSON values

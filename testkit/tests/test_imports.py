"""``rlm_testkit.imports.packages_imported_by``: what a fresh interpreter imported, and a loud
failure when the code under test does not run."""

from __future__ import annotations

import pytest
from rlm_testkit.imports import packages_imported_by


def test_reports_exactly_the_named_packages_that_were_imported():
    got = packages_imported_by("import json.decoder", ["json", "csv"])
    assert {"json", "json.decoder"} <= set(got)
    assert all(name.split(".")[0] == "json" for name in got)  # csv was named, not imported
    assert got == sorted(got)


def test_a_fresh_interpreter_does_not_see_this_process_imports():
    import fractions  # noqa: F401 - imported here, not in the child

    assert packages_imported_by("pass", ["fractions"]) == []


def test_failing_code_is_an_assertion_error_with_its_stderr():
    with pytest.raises(AssertionError, match="ModuleNotFoundError.*no_such_module_xyz"):
        packages_imported_by("import no_such_module_xyz", ["anything"])

"""Our top-level packages share names with packages on the public index (`verifiers` is a popular RL
library): they must import from this checkout."""

import importlib

import pytest

from conftest import REPO


@pytest.mark.parametrize("name", ["stages", "schemas", "verifiers"])
def test_package_imports_from_this_checkout(name):
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert module.__file__.startswith(str(REPO) + "/"), module.__file__

"""Hooks a conftest.py can implement to extend the benchmark."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .protocols import Protocol


@pytest.hookspec
def pytest_miabench_register_protocols() -> list[type[Protocol]]:  # type: ignore[empty-body]
    """Return protocol classes to offer under ``--mia-protocol``.

    Each class subclasses ``pytest_miabench.protocols.Protocol`` and has a
    unique ``name``; a name already taken by a built-in protocol replaces it.
    Implement it in a ``conftest.py`` at the root of the run (or a plugin).
    """

"""CI sees the verdict: ``pytest --help`` works, a gate is a test outcome
(terminal, JUnit, pytest-html, with and without xdist), one sign convention
for the baseline verdict, and stray ``--mia-*`` options are pointed out."""

from __future__ import annotations

import re

import pytest

from pytest_miabench.settings import OPTIONS

# -- pytest --help -------------------------------------------------------------------


def test_help_renders_every_option_and_ini_key(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0, result.stderr.str()
    text = result.stdout.str()
    for option in OPTIONS:
        assert option.flag in text
        assert re.search(rf"^\s*{option.dest} \(string\)", text, re.MULTILINE), option.dest
        if option.negative:
            assert option.negative in text
    # A literal percent sign reads as one, in the option's help and the ini key's.
    flat = " ".join(text.split())
    assert "lower bound of its 95% CI)" in flat and "95%% CI" not in flat

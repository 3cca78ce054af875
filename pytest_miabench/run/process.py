"""What this pytest process is and runs: the protocols chosen, its part
under xdist, and (where samples run) the runtime with the built-in mock.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import pytest

from ..config.options import OPTIONS_BY_DEST, raw_value
from ..config.settings import Settings
from ..protocols import Protocol
from .keys import SETTINGS_KEY


class Role(NamedTuple):
    """This process under xdist: a worker, and whether it hands out samples
    to workers (the xdist controller, which runs none)."""

    is_worker: bool
    uses_xdist: bool


def prepare(config: pytest.Config, settings: Settings) -> tuple[Settings, tuple[Protocol, ...], Role]:
    """The run's settings with its protocols expanded, the protocols (the
    headline first), and this process's role; the settings are stashed."""
    protocols = chosen_protocols(config, settings)
    # ``all`` expanded: the settings name every protocol that judges.
    settings = dataclasses.replace(settings, protocol=protocols[0].name, protocols=tuple(protocol.name for protocol in protocols))
    config.stash[SETTINGS_KEY] = settings
    return settings, protocols, xdist_role(config)


def xdist_role(config: pytest.Config) -> Role:
    """Roles as xdist itself tells them: a worker has ``workerinput``; the
    controller is any other process with a distribution mode, except under
    --collect-only, where xdist runs no session and this process collects.
    A distribution mode that would send every sample to one worker (or to
    each) is refused or warned about."""
    is_worker = hasattr(config, "workerinput")
    dist = str(config.getoption("dist", "no") or "no")
    uses_xdist = dist != "no" and not is_worker and not config.option.collectonly
    if dist == "each" and not is_worker:
        raise pytest.UsageError(
            "--dist each runs every MIA-Bench sample on every worker, paying the model and the judge once per "
            "worker; use --dist load (what -n implies) or worksteal"
        )
    if uses_xdist and dist in ("loadscope", "loadfile", "loadgroup"):
        # These group items by file/scope/group, and every sample shares one.
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(f"--dist {dist} sends every MIA-Bench sample to one worker; use --dist load or worksteal"),
            stacklevel=2,
        )
    return Role(is_worker, uses_xdist)


def start_runtime(config: pytest.Config, settings: Settings, protocols: tuple[Protocol, ...]) -> None:
    """In a process that runs samples: the runtime, its calls routed to the
    built-in mock for the roles that name it (started here, stopped by
    pytest's cleanup after the engine)."""
    from ..calls import mocking
    from .runtime import BenchRuntime

    runtime = BenchRuntime(config, mocking.start(settings, config.add_cleanup), protocols)
    config.pluginmanager.register(runtime, "miabench-runtime")


def chosen_protocols(config: pytest.Config, settings: Settings) -> tuple[Protocol, ...]:
    """The chosen protocols, the headline first: built-in ones or ones a
    conftest registered.  ``all`` stands for every one of them, in the
    registry's order (the default, evalscope, first), where it is listed."""
    from ..protocols import builtin_protocols

    available = builtin_protocols()
    for extra in config.hook.pytest_miabench_register_protocols():
        for cls in extra or ():
            if not (isinstance(cls, type) and issubclass(cls, Protocol)):
                raise pytest.UsageError(f"pytest_miabench_register_protocols returned {cls!r}, not a Protocol subclass")
            available[cls.name] = cls
    names: list[str] = []
    for name in settings.protocols:
        names.extend(available if name == "all" else [name])
    unknown = [name for name in names if name not in available]
    if unknown:
        _, where = raw_value(config, OPTIONS_BY_DEST["mia_protocol"])
        listed = ", ".join(repr(name) for name in unknown)
        raise pytest.UsageError(
            f"{where}: unknown protocol{'s' if len(unknown) > 1 else ''} {listed}; "
            f"choose one of {', '.join(sorted(available))} (or several, comma-separated, or all)"
        )
    return tuple(available[name]() for name in dict.fromkeys(names))

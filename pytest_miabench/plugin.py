"""pytest entry point: options and wiring only.

Without ``--mia-bench`` this module registers options and nothing else: no
openai, datasets or Pillow import, no files written, so a normal test suite
runs exactly as before.
"""

from __future__ import annotations

import pytest

from . import hookspecs
from .config.options import add_options, enabled
from .config.settings import Settings, resolve
from .run.keys import SETTINGS_KEY


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Offer the extension hooks (e.g. custom judge protocols)."""
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """One option group, every flag with an ini twin."""
    add_options(parser)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Resolve settings; with --mia-bench, register the run's plugin objects:
    the controller's (reporting/controller.py) where results are reported,
    the runtime (run/process.py) where samples run."""
    if not enabled(config):
        config.stash[SETTINGS_KEY] = Settings()
        _warn_without_bench(config)
        return
    config.stash[SETTINGS_KEY] = resolve(config)
    from .run import process

    settings, protocols, role = process.prepare(config, config.stash[SETTINGS_KEY])
    if not role.is_worker:
        from .reporting import controller

        controller.start(config, settings, protocols, role.uses_xdist)
    if not role.uses_xdist:
        process.start_runtime(config, settings, protocols)


def _warn_without_bench(config: pytest.Config) -> None:
    """``--mia-*`` flags on the command line do nothing without --mia-bench:
    a CI job that forgot it would otherwise run the project's own tests (or
    none) and pass.  ``mia_*`` ini values stay silent: a project keeps its
    settings in its ini file and turns the benchmark on per run."""
    if hasattr(config, "workerinput"):
        return  # the controller said it
    given = sorted({arg.partition("=")[0] for arg in config.invocation_params.args if isinstance(arg, str) and arg.startswith("--mia-")})
    if given:
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(
                f"{', '.join(given)} given without --mia-bench: no MIA-Bench sample is collected and "
                f"{'these options do' if len(given) > 1 else 'this option does'} nothing; add --mia-bench (or mia_bench = true in the ini file)"
            ),
            stacklevel=2,
        )


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """What reproduces the run: model, judge, protocol, dataset, limit, and
    where each role's calls go with which key (never the key itself)."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.enabled:
        return None
    from .calls.endpoint import endpoints
    from .config.settings import MOCK_LABEL, mock_roles

    limit = "all" if settings.limit is None else str(settings.limit)
    revision = settings.model_revision or "unset (cached answers reused only to resume an interrupted run)"
    lines = [
        f"mia-bench: model={settings.model} revision={revision} judge={settings.judge_model} protocol={','.join(settings.protocols)}",
        f"mia-bench: dataset={settings.dataset} split={settings.split} limit={limit} concurrency={settings.concurrency}",
    ]
    if settings.demo:
        lines.insert(0, "mia-bench: DEMO: built-in demo set and mock model and judge; no key, no network, the score means nothing")
    for endpoint in endpoints(settings):
        if endpoint.role in mock_roles(settings):
            lines.append(f"mia-bench: {endpoint.role}: {MOCK_LABEL}, no key, nothing leaves this machine")
            continue
        where = endpoint.shown
        if endpoint.url_is_default:
            where += " (default)"
        if note := endpoint.where_note():
            where += f" ({note})"
        api = settings.api if endpoint.role == "model" else settings.judge_api
        where += " (Responses API)" if api == "responses" else ""
        lines.append(f"mia-bench: {endpoint.role}: {where}, {endpoint.key_note()}")
    return lines

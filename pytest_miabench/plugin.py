"""pytest entry point: options and wiring only.

Without ``--mia-bench`` this module registers options and nothing else: no
openai, datasets or Pillow import, no files written, so a normal test suite
runs exactly as before.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from . import hookspecs
from .config.options import OPTIONS_BY_DEST, add_options, enabled, raw_value
from .config.settings import Settings, resolve
from .run.keys import SETTINGS_KEY

if TYPE_CHECKING:
    from .protocols import Protocol



def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Offer the extension hooks (e.g. custom judge protocols)."""
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """One option group, every flag with an ini twin."""
    add_options(parser)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Resolve settings; with --mia-bench, register the run's plugin objects."""
    if not enabled(config):
        config.stash[SETTINGS_KEY] = Settings()
        _warn_without_bench(config)
        return
    settings = resolve(config)
    config.stash[SETTINGS_KEY] = settings
    from .reporting.aggregate import AGGREGATOR_KEY, Aggregator, Handoff
    from .run.runtime import BenchRuntime, cache_directory, load_source

    protocols = _protocols(config, settings)
    # ``all`` expanded: the settings name every protocol that judges.
    settings = dataclasses.replace(settings, protocol=protocols[0].name, protocols=tuple(protocol.name for protocol in protocols))
    config.stash[SETTINGS_KEY] = settings
    # Roles as xdist itself tells them: a worker has ``workerinput``; the
    # controller is any other process with a distribution mode, except under
    # --collect-only, where xdist runs no session and this process collects.
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
    if not is_worker:
        _warn_separate_path_values(config)
        directory = cache_directory(config, settings)
        # Fail fast with one clear message, before any xdist worker starts.
        _check_output_paths(config, settings, directory)
        source = load_source(config, settings)
        instructions = [sample.spec.instruction if sample.spec is not None else None for sample in source.samples]
        aggregator = Aggregator(config, settings, protocols, source.fingerprint, instructions)
        aggregator.cache_directory = directory
        config.stash[AGGREGATOR_KEY] = aggregator
        config.pluginmanager.register(aggregator, "miabench-aggregator")
        if uses_xdist:
            import uuid

            # Where workers leave finished records for an interrupted
            # controller: the cache, or without one a directory of this run.
            handoff_directory = directory
            if handoff_directory is None:
                import shutil
                import tempfile

                handoff_directory = Path(tempfile.mkdtemp(prefix="mia-handoff-"))
                config.add_cleanup(lambda: shutil.rmtree(handoff_directory, ignore_errors=True))
            aggregator.handoff = Handoff(uuid.uuid4().hex, handoff_directory)
        # An estimate begins no run: it only reads which one a run would resume.
        if directory is not None and not config.option.collectonly and not settings.estimate:
            from .run.journal import ModelRuns

            config.pluginmanager.register(ModelRuns(config, settings, directory), "miabench-model-runs")
        if config.pluginmanager.hasplugin("html") and config.getoption("htmlpath", None):
            # pytest-html is writing a report here: give it the run's numbers.  Only
            # then, so its hooks are never named to a pytest that lacks them.
            from .reporting.pytesthtml import PytestHtmlHooks

            config.pluginmanager.register(PytestHtmlHooks(aggregator), "miabench-pytest-html")
        from .reporting.github import GithubActions, wanted

        if wanted():
            # On a GitHub runner: the job summary and an annotation, from this process only.
            config.pluginmanager.register(GithubActions(aggregator), "miabench-github")
    if not uses_xdist:
        runtime = BenchRuntime(config, _with_mock(config, settings), protocols)
        config.pluginmanager.register(runtime, "miabench-runtime")


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


def _with_mock(config: pytest.Config, settings: Settings) -> Settings:
    """Start the built-in mock server when a role is ``mock`` and route that
    role to it.  Only processes that run samples start one (the single
    process, or each xdist worker: answers depend only on the request, so
    workers need not share a server, and nothing crosses processes); it stops
    when pytest cleans up, after the engine (cleanups run last-in first-out)."""
    from .config.settings import mock_roles

    roles = mock_roles(settings)
    if not roles:
        return settings
    from .calls.mock import MockServer

    server = MockServer()
    config.add_cleanup(server.stop)
    return dataclasses.replace(
        settings,
        base_url=server.url if "model" in roles else settings.base_url,
        judge_base_url=server.url if "judge" in roles else settings.judge_base_url,
    )


_PATH_FLAGS = ("--mia-dataset", "--mia-cache-dir", "--mia-baseline", "--mia-report", "--mia-html", "--mia-image-root")


def _warn_separate_path_values(config: pytest.Config) -> None:
    """pytest picks its rootdir (and so its cache directory) before plugin
    options are known, so in ``--mia-dataset /data/x.parquet`` it takes the
    existing path for a test path.  ``--mia-dataset=/data/x.parquet`` is safe."""
    from pathlib import Path

    args = list(config.invocation_params.args)
    for flag, value in zip(args, args[1:]):
        if flag in _PATH_FLAGS and Path(value).expanduser().exists():
            config.issue_config_time_warning(
                pytest.PytestConfigWarning(
                    f"write {flag}={value} (with '='): given as a separate argument, pytest also takes the path "
                    f"into account for its rootdir ({config.rootpath}), which moves the response cache"
                ),
                stacklevel=2,
            )


def _check_output_paths(config: pytest.Config, settings: Settings, cache: Path | None) -> None:
    """A report path that cannot be written is found before any API call,
    and so is one that another output would overwrite: two outputs on one
    file, or a report on the response cache's database."""
    from .calls.cache import ResponseCache
    from .reporting.report import output_path_problem, same_file

    ours = [(flag, value) for flag, value in (("--mia-report", settings.report), ("--mia-html", settings.html)) if value]
    for flag, value in ours:
        if problem := output_path_problem(value):
            raise pytest.UsageError(f"{flag}: {problem}" if problem.startswith(value) else f"{flag}: cannot write {value}: {problem}")
    # pytest's own reports (JUnit XML, pytest-html's page) write to a path too.
    others = [(flag, getattr(config.option, dest, None)) for flag, dest in (("--junitxml", "xmlpath"), ("--html", "htmlpath"))]
    outputs = ours + [(flag, value) for flag, value in others if isinstance(value, str) and value]
    for i, (flag, value) in enumerate(outputs):
        for other_flag, other in outputs[i + 1 :]:
            if same_file(value, other):
                raise pytest.UsageError(f"{flag} and {other_flag} both write {os.path.realpath(Path(value).expanduser())}; give each its own path")
    if cache is None:
        return
    database = cache / ResponseCache.FILENAME
    for flag, value in ours:
        for name in (database.name, *(database.name + suffix for suffix in ResponseCache.SIDE_FILES)):
            if same_file(value, database.with_name(name)):
                raise pytest.UsageError(f"{flag}: {value} is the response cache's database; give the report another path")


def _protocols(config: pytest.Config, settings: Settings) -> tuple[Protocol, ...]:
    """The chosen protocols, the headline first: built-in ones or ones a
    conftest registered.  ``all`` stands for every one of them, in the
    registry's order (the default, evalscope, first), where it is listed."""
    from .protocols import Protocol, builtin_protocols

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

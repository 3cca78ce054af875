"""The controller's wiring: what the process that reports registers.

Run in ``pytest_configure`` of the single process or the xdist controller
(never on a worker): the output paths are checked before anything starts,
then the aggregator, the xdist handoff, the run journal and the optional
outputs (pytest-html's page, GitHub Actions) are registered.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..calls.cache import ResponseCache
from ..config.settings import Settings
from ..protocols.base import Protocol
from ..run.handoff import Handoff
from ..run.runtime import cache_directory, load_source
from .aggregate import AGGREGATOR_KEY, Aggregator
from .report import output_path_problem, same_file


def start(config: pytest.Config, settings: Settings, protocols: tuple[Protocol, ...], uses_xdist: bool) -> Aggregator:
    """Register the controller's plugin objects; returns the aggregator."""
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
        # Where workers leave finished records for an interrupted
        # controller: the cache, or without one a directory of this run.
        aggregator.handoff = Handoff.start(config, directory)
    # An estimate begins no run: it only reads which one a run would resume.
    if directory is not None and not config.option.collectonly and not settings.estimate:
        from ..run.journal import ModelRuns

        config.pluginmanager.register(ModelRuns(config, settings, directory), "miabench-model-runs")
    _register_outputs(config, aggregator)
    return aggregator


def _register_outputs(config: pytest.Config, aggregator: Aggregator) -> None:
    if config.pluginmanager.hasplugin("html") and config.getoption("htmlpath", None):
        # pytest-html is writing a report here: give it the run's numbers.  Only
        # then, so its hooks are never named to a pytest that lacks them.
        from .pytesthtml import PytestHtmlHooks

        config.pluginmanager.register(PytestHtmlHooks(aggregator), "miabench-pytest-html")
    from .github import GithubActions, wanted

    if wanted():
        # On a GitHub runner: the job summary and an annotation, from this process only.
        config.pluginmanager.register(GithubActions(aggregator), "miabench-github")


_PATH_FLAGS = ("--mia-dataset", "--mia-cache-dir", "--mia-baseline", "--mia-report", "--mia-html", "--mia-image-root")


def _warn_separate_path_values(config: pytest.Config) -> None:
    """pytest picks its rootdir (and so its cache directory) before plugin
    options are known, so in ``--mia-dataset /data/x.parquet`` it takes the
    existing path for a test path.  ``--mia-dataset=/data/x.parquet`` is safe."""
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

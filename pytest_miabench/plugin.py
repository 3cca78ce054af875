"""pytest entry point: options and wiring only.

Without ``--mia-bench`` this module registers options and nothing else: no
openai, datasets or Pillow import, no files written, so a normal test suite
runs exactly as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from . import hookspecs
from .settings import OPTIONS_BY_DEST, Settings, add_options, enabled, raw_value, resolve

if TYPE_CHECKING:
    from .protocols import Protocol

SETTINGS_KEY = pytest.StashKey[Settings]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Offer the extension hooks (e.g. custom judge protocols)."""
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """One option group, every flag with an ini twin."""
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Before any plugin is configured: a cleanup registered now runs after
    every other plugin's cleanup (see ``runtime.freeze_heap``), and a
    process that will run samples starts importing openai (the first
    request's longest wait) and tunes malloc before any thread exists."""
    if not enabled(config):
        return
    from .runtime import register_thaw, tune_malloc

    register_thaw(config)
    runs_items = hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None)
    if runs_items and not config.option.collectonly:
        tune_malloc()
        _import_client_library()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Resolve settings; with --mia-bench, register the run's plugin objects."""
    if not enabled(config):
        config.stash[SETTINGS_KEY] = Settings()
        return
    settings = resolve(config)
    config.stash[SETTINGS_KEY] = settings
    from .aggregate import AGGREGATOR_KEY, Aggregator
    from .runtime import RUNTIME_KEY, BenchRuntime, load_source

    protocol = _protocol(config, settings)
    judge_image = protocol.judge_sees_image if settings.judge_image is None else settings.judge_image
    is_worker = hasattr(config, "workerinput")
    uses_xdist = bool(getattr(config.option, "numprocesses", None)) and not is_worker
    if uses_xdist and getattr(config.option, "dist", None) in ("loadscope", "loadfile"):
        # Both group items by file/scope, and every sample shares one.
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(
                f"--dist {config.option.dist} sends every MIA-Bench sample to one worker; use --dist load or worksteal"
            ),
            stacklevel=2,
        )
    if not is_worker:
        _warn_separate_path_values(config)
        # Fail fast with one clear message, before any xdist worker starts.
        _check_output_paths(settings)
        load_source(config, settings)
        aggregator = Aggregator(config, settings, protocol, judge_image)
        config.stash[AGGREGATOR_KEY] = aggregator
        config.pluginmanager.register(aggregator, "miabench-aggregator")
    if not uses_xdist:
        runtime = BenchRuntime(config, settings, protocol, judge_image)
        config.stash[RUNTIME_KEY] = runtime
        config.pluginmanager.register(runtime, "miabench-runtime")


def _import_client_library() -> None:
    """Import openai (~0.4 s) on a thread while this one loads the dataset
    and collects: the first request needs it."""
    import sys
    import threading

    if "openai" not in sys.modules:
        threading.Thread(target=__import__, args=("openai",), name="mia-import", daemon=True).start()


_PATH_FLAGS = ("--mia-dataset", "--mia-cache-dir", "--mia-baseline", "--mia-report", "--mia-html")


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


def _check_output_paths(settings: Settings) -> None:
    """A report path that cannot be written is found before any API call."""
    from pathlib import Path

    for flag, value in (("--mia-report", settings.report), ("--mia-html", settings.html)):
        if value and Path(value).expanduser().is_dir():
            raise pytest.UsageError(f"{flag}: {value} is a directory; give a file path")


def _protocol(config: pytest.Config, settings: Settings) -> Protocol:
    """The chosen protocol: a built-in one or one a conftest registered."""
    from .protocols import Protocol, builtin_protocols

    available = builtin_protocols()
    for extra in config.hook.pytest_miabench_register_protocols():
        for cls in extra or ():
            if not (isinstance(cls, type) and issubclass(cls, Protocol)):
                raise pytest.UsageError(f"pytest_miabench_register_protocols returned {cls!r}, not a Protocol subclass")
            available[cls.name] = cls
    if settings.protocol not in available:
        _, where = raw_value(config, OPTIONS_BY_DEST["mia_protocol"])
        raise pytest.UsageError(
            f"{where}: unknown protocol {settings.protocol!r}; choose one of {', '.join(sorted(available))}"
        )
    return available[settings.protocol]()


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """What reproduces the run: model, judge, protocol, dataset, limit."""
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.enabled:
        return None
    limit = "all" if settings.limit is None else str(settings.limit)
    return [
        f"mia-bench: model={settings.model} judge={settings.judge_model} protocol={settings.protocol}",
        f"mia-bench: dataset={settings.dataset} split={settings.split} limit={limit} concurrency={settings.concurrency}",
    ]

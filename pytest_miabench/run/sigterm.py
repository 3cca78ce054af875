"""SIGTERM (what CI runners send on cancel) ends the run like Ctrl-C, so the
partial report is written.

Installed by the process that reports (the single process, or the xdist
controller) for the length of its session only: from the main thread, only
over SIGTERM's default action (never over another handler), and restored
when the session ends.
"""

from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: pytest ends the run as on Ctrl-C."""


class SigtermGuard:
    """Turns the session's first SIGTERM into ``Terminated``, until the
    reports are being written (``finishing``)."""

    def __init__(self) -> None:
        self._installed = False
        self._terminated = False
        self.finishing = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def _on_sigterm(self, signum: int, frame: object) -> None:
        # Once is enough, and never while the reports are written: the run
        # is ending then anyway, and an exception would cut the report short.
        if self._terminated or self.finishing:
            return
        self._terminated = True
        raise Terminated("SIGTERM received: the run was cancelled; the report holds what was obtained")

    def restore(self) -> None:
        if self._installed:
            self._installed = False
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

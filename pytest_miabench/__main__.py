"""``python -m pytest_miabench compare ...``: the ``pytest-miabench`` command."""

from .reporting.compare import main

main()

"""``python -m pytest_miabench compare ...``: the ``pytest-miabench`` command."""

from .compare import main

main()

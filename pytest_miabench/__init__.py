"""pytest-miabench: the MIA-Bench benchmark as a pytest suite.

Importing this package is cheap on purpose: openai, datasets and Pillow are
imported only when ``--mia-bench`` is given.
"""

__version__ = "0.1.0.dev0"

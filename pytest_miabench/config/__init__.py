"""What a run is asked to do: the ``--mia-*`` options and ini keys, and the text and URL helpers every room shares."""

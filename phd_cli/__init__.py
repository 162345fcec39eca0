"""The ``phd`` command line: the only code besides tests that may import every part.

Each sub-command lives in its own ``cmd_<name>.py`` module exposing ``add_parser(subparsers)``
(cheap: argparse only) and, through ``set_defaults(handler=...)``, a handler that imports the
part it drives lazily, so that a machine with only the ``[agent]`` extra can still run
``phd agent ...`` and gets an install hint, not a traceback, for the rest.
"""

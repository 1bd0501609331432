"""tooloo: run, observe and benchmark the TooLoo stack.

The package keeps its import light so that `tooloo --version` and shell completion stay
near bare-interpreter speed: the resilience modules live in `tooloo_cli.resilience`,
configuration in `tooloo_cli.config`, and nothing heavy is imported from here.
"""

__version__ = "0.1.0"

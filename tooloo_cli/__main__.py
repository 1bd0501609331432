"""Entry point of the `tooloo` console script and of `python -m tooloo_cli`.

`tooloo --version` is answered before typer is imported: typer alone costs ~50 ms of
start-up, and the version is what scripts and shell prompts ask for most often. The
everyday `status`, `up`, `down` and one-shot `observe` go the same way when their
arguments are the plain ones (fastpath.py); everything else is typer's (cli.py).
"""

import sys


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):
        from tooloo_cli import __version__

        print(f"tooloo {__version__}")
        return
    from tooloo_cli import fastpath

    if fastpath.run(sys.argv[1:]):
        return  # not reached: it exits with the command's code
    from tooloo_cli.cli import run

    run()


if __name__ == "__main__":
    main()

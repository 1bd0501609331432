"""Entry point of the `tooloo` console script and of `python -m tooloo_cli`.

`tooloo --version` is answered before typer is imported: typer alone costs ~50 ms of
start-up, and the version is what scripts and shell prompts ask for most often.
"""

import sys


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):
        from tooloo_cli import __version__

        print(f"tooloo {__version__}")
        return
    from tooloo_cli.cli import run

    run()


if __name__ == "__main__":
    main()

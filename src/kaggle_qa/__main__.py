"""The ``kaggle-qa`` entry point (also ``python -m kaggle_qa``).

- ``kaggle-qa ask "…" [--json]``, ``kaggle-qa chat``, ``kaggle-qa serve``: the assistant
  (:mod:`kaggle_qa.assistant.cli`);
- ``kaggle-qa run [kedro run options]``: the pipelines, exactly as ``kedro run``;
- anything else (e.g. ``kaggle-qa --pipeline train``): ``kedro run`` with those options, as
  this entry point always did.
"""

import sys
from pathlib import Path

ASSISTANT_COMMANDS = {"ask", "chat", "serve"}


def run_kedro(args: list[str]):
    """`kedro run` with `args` (Kedro's own run command of this package)."""
    from kedro.framework.cli.utils import find_run_command
    from kedro.framework.project import configure_project

    package_name = Path(__file__).parent.name
    configure_project(package_name)
    run = find_run_command(package_name)
    return run(args=args, prog_name="kaggle-qa run")


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ASSISTANT_COMMANDS:
        from kaggle_qa.assistant.cli import main as assistant_main

        return assistant_main(argv)
    if argv and argv[0] == "run":
        argv = argv[1:]
    return run_kedro(argv)


if __name__ == "__main__":
    sys.exit(main())

"""What every fault test checks about a command: its exit code and its one ``Error:`` line."""

from __future__ import annotations

import sys

from click.testing import CliRunner, Result

from convseg_deploy.cli import main


def cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def cli_process(setup: str, *args: object) -> list[str]:
    """The command line of ``convseg-deploy ARGS`` in a Python process that first runs ``setup``
    (signal dispositions, resource limits: what a test must set inside the child)."""
    main_call = "import sys\nfrom convseg_deploy.cli import main\nmain(sys.argv[1:], prog_name='convseg-deploy')\n"
    return [sys.executable, "-c", setup + "\n" + main_call, *(str(a) for a in args)]


def error_line(output: str) -> str:
    """The one ``Error:`` line of a failed command; there must be exactly one and no traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]

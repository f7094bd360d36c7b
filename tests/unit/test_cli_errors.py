"""Every command's bad input ends the same way: the exit status of the convention
(:mod:`cloudpilot.commands`), one ``cloudpilot COMMAND: error:`` line, and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "dirac_cfg"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPILOT_")}
    return subprocess.run(
        [sys.executable, "-m", "cloudpilot", *args],
        env={**clean, "KUBECONFIG": os.devnull},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _inputs(tmp: Path) -> None:
    (tmp / "bad.yaml").write_text("kind: CloudPilotPool\nspec: [unclosed\n", encoding="utf-8")
    (tmp / "bad.cfg").write_text("Resources\n{\n  Sites\n  {\n", encoding="utf-8")
    (tmp / "empty.yaml").write_text("kind: ConfigMap\nmetadata: {name: x}\n", encoding="utf-8")
    (tmp / "good.cfg").write_text((DATA / CFG).read_text(encoding="utf-8"), encoding="utf-8")


CFG = next((p.name for p in sorted(DATA.glob("*.cfg"))), "missing.cfg")

CASES = [
    # (command line, exit status, what stderr says after the prefix)
    (("render", "-f", "no-such.yaml"), 2, "cannot read no-such.yaml: No such file"),
    (("render", "-f", "bad.yaml"), 2, "bad.yaml: not valid YAML"),
    (("render", "-f", "empty.yaml"), 2, "no CloudPilotPool"),
    (("render", "--secret-file", "x=/no/such", "-f", "empty.yaml"), 2, "cannot read"),
    (("render", "-f", "empty.yaml", "--bogus"), 2, "unrecognized arguments: --bogus"),
    (("render",), 2, "the following arguments are required: -f/--filename"),
    (("import-dirac-cfg", "no-such.cfg"), 2, "cannot read the CS file no-such.cfg"),
    (("import-dirac-cfg", "bad.cfg"), 2, "cannot parse bad.cfg as a DIRAC CS file"),
    (("import-dirac-cfg", "good.cfg", "--auth", "no-such.ini"), 2, "cannot read the cloud."),
    (
        ("import-dirac-cfg", "good.cfg", "-o", "/no/such/dir/x.yaml"),
        2,
        "cannot write /no/such/dir/x.yaml: No such file or directory",
    ),
    (
        ("import-dirac-cfg", "good.cfg", "-o", "good.cfg/x.yaml"),
        2,
        "cannot write good.cfg/x.yaml: Not a directory",
    ),
    (("import-dirac-cfg", "good.cfg", "--bogus"), 2, "unrecognized arguments: --bogus"),
    (("operator", "--bogus"), 2, "unrecognized arguments: --bogus"),
    (("operator", "--log-format", "JSON"), 2, "argument --log-format: invalid choice"),
    (("operator", "--parallelism", "0"), 2, "argument --parallelism: expected"),
    (("operator", "--reconcile-interval", "600"), 2, "at most 300"),
    (("demo", "--replicas", "0"), 2, "argument --replicas: expected a whole number"),
    (("demo", "--bogus"), 2, "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize(("argv", "status", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_error_line_and_the_conventional_status(
    argv: tuple[str, ...], status: int, message: str, tmp_path: Path
) -> None:
    _inputs(tmp_path)
    result = _run(*argv, cwd=tmp_path)

    assert result.returncode == status, result.stderr
    prefix = f"cloudpilot {argv[0]}: error: "
    errors = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, result.stderr
    assert message in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unwritable_output_directory_is_status_2(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory")
    _inputs(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = _run("import-dirac-cfg", "good.cfg", "-o", str(locked / "x.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "cloudpilot import-dirac-cfg: error: cannot write" in result.stderr
    assert "Permission denied" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_command_is_status_2() -> None:
    result = _run("frobnicate", cwd=Path.cwd())
    assert result.returncode == 2
    assert "cloudpilot: error: argument COMMAND: invalid choice: 'frobnicate'" in result.stderr


def test_version_is_the_installed_distributions() -> None:
    result = _run("--version", cwd=Path.cwd())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cloudpilot {metadata.version('cloudpilot')}"

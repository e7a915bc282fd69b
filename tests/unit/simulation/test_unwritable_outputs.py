"""An output path or flag the user got wrong is a usage error (exit 3, one line), never a
traceback with an outcome's exit code (1 means "rolled back" to a CI gate)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from canaryd.cli import main
from canaryd.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parents[3]
HEALTHY = str(ROOT / "simulations" / "healthy.yaml")


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


def test_a_report_under_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    code, out = _run("simulate", HEALTHY, "--report", str(tmp_path / "taken" / "r.html"))
    assert code == ExitCode.USAGE, out
    assert "--report" in out and "cannot write" in out and "Traceback" not in out


def test_openmetrics_creates_its_folder_as_report_does(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "x.om"
    code, out = _run("simulate", HEALTHY, "--openmetrics", str(target))
    assert code == ExitCode.NO_WORSE, out
    assert target.read_text().rstrip().endswith("# EOF")


def test_plan_traffic_beyond_what_a_scenario_models_is_refused() -> None:
    policy = str(ROOT / "policies" / "llm-kserve.yaml")
    code, out = _run("plan", policy, "--traffic", "2000000")
    assert code == ExitCode.USAGE, out
    assert "expected at most 1,000,000 requests per second" in out

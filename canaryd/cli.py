"""The ``canaryd`` command line.

Every command module is cheap to import: scipy, numpy, pandas, matplotlib, kubernetes and the
Prometheus client are imported inside the commands that use them, so ``canaryd --help`` and
``canaryd validate`` start fast (``benchmarks/bench_startup.py``; guarded by
``tests/unit/test_startup.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from canaryd.daemon.commands import (
    pause_cmd,
    promote_cmd,
    resume_cmd,
    rollback_cmd,
    run_cmd,
    status_cmd,
)
from canaryd.errors import InputError, Problem
from canaryd.exitcodes import HELP as EXIT_CODES_HELP
from canaryd.exitcodes import ExitCode
from canaryd.metrics.analyze import analyze
from canaryd.policy.lint import lint
from canaryd.policy.loader import LoadedPolicy, load_policy_file, policy_files
from canaryd.policy.model import policy_json_schema
from canaryd.simulation.commands import plan_cmd, replay_cmd, simulate_cmd
from canaryd.validation import template_problems


class _UsageExit(click.ClickException):
    """A click error shown exactly as click shows it, but exiting 3 (usage or configuration)."""

    exit_code = ExitCode.USAGE

    def __init__(self, original: click.ClickException) -> None:
        super().__init__(original.message)
        self.original = original

    def show(self, file: Any = None) -> None:
        self.original.show(file)


class CanarydGroup(click.Group):
    """The command group; a usage or configuration error click reports exits 3, not 2.

    Click reports bad flags, missing arguments and unreadable paths (``click.Path(exists=True)``)
    as a ``UsageError`` with exit code 2, which a CI gate would read as "inconclusive".
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            raise _UsageExit(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageExit:
            raise
        except click.ClickException as exc:
            raise _UsageExit(exc) from None


@click.group(
    cls=CanarydGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES_HELP.replace("Exit codes:", "Exit codes of analyze, replay and simulate:"),
)
@click.version_option(package_name="canaryd")
def main() -> None:
    """canaryd: canary analysis for KServe models with anytime-valid sequential tests."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--quiet", "-q", is_flag=True, help="Print problems only.")
def validate(paths: tuple[Path, ...], strict: bool, quiet: bool) -> None:
    """Check policy files or directories; one line per problem.

    Every problem of every file in one pass. A ConfigMap manifest is read as the policy files in
    its data. Exits 0 when everything is valid, 1 otherwise (warnings fail only with --strict).
    """
    errors: list[Problem] = []
    warnings: list[Problem] = []
    loaded: list[LoadedPolicy] = []
    files = list(policy_files(paths))
    if not files:
        errors.append(Problem(" ".join(map(str, paths)), None, None, "", "no policy files found"))
    for f in files:
        if not f.exists():
            errors.append(Problem(str(f), None, None, "", "no such file or directory"))
            continue
        try:
            got = load_policy_file(f, configmaps=True, checks=[template_problems])
        except InputError as exc:
            errors.extend(exc.problems)
            continue
        loaded.extend(got)
        for lp in got:
            warnings.extend(lint(lp))
    names: dict[str, LoadedPolicy] = {}
    for lp in loaded:
        if lp.policy.name in names:
            first = names[lp.policy.name]
            errors.append(
                Problem(
                    lp.file,
                    lp.line,
                    None,
                    "metadata.name",
                    f"policy name {lp.policy.name!r} is already used ({first.file}:{first.line})",
                )
            )
        names.setdefault(lp.policy.name, lp)
    seen: dict[tuple[str, str], LoadedPolicy] = {}
    for lp in loaded:
        t = lp.policy.spec.target
        key = (t.namespace, t.inference_service)
        if key in seen:
            first = seen[key]
            errors.append(
                Problem(
                    lp.file,
                    lp.line,
                    None,
                    f"{lp.policy.name}: spec.target",
                    f"{t.namespace}/{t.inference_service} is already targeted by policy "
                    f"{first.policy.name!r} ({first.file}:{first.line})",
                )
            )
        seen[key] = lp
    for p in errors + warnings:
        click.echo(str(p), err=p.severity == "error")
    if not quiet:
        click.echo(
            f"{len(files)} file(s), {len(loaded)} polic{'y' if len(loaded) == 1 else 'ies'}: "
            f"{len(errors)} error(s), {len(warnings)} warning(s)"
        )
    if errors or (strict and warnings):
        sys.exit(1)


@main.command()
@click.option("--scenario", is_flag=True, help="The simulation scenario's schema instead.")
def schema(scenario: bool) -> None:
    """Print the JSON Schema of a CanaryPolicy document (or of a scenario)."""
    if scenario:
        from canaryd.simulation.scenario import scenario_json_schema

        click.echo(json.dumps(scenario_json_schema(), indent=2, sort_keys=True, default=str))
        return
    click.echo(json.dumps(policy_json_schema(), indent=2, sort_keys=True))


for _cmd in (
    analyze,
    simulate_cmd,
    replay_cmd,
    plan_cmd,
    run_cmd,
    status_cmd,
    promote_cmd,
    rollback_cmd,
    pause_cmd,
    resume_cmd,
):
    main.add_command(_cmd)

if __name__ == "__main__":  # pragma: no cover
    main()

"""`tooloo test`: the packaged Phase 6 suite, its grouped summary and its exit code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tooloo_cli.phase6.runner import GROUPS

SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.M)


def _tooloo_test(tmp_path: Path, *args: str, sitecustomize: str | None = None,
                 config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOOLOO_")}
    env["NO_COLOR"] = "1"
    if sitecustomize is not None:
        (tmp_path / "sitecustomize.py").write_text(sitecustomize)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    chosen = ["--config", str(config)] if config is not None else []
    return subprocess.run([sys.executable, "-m", "tooloo_cli", *chosen, "test", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)


def test_the_suite_passes_with_at_least_the_seeds_32_checks_in_eight_groups(tmp_path: Path) -> None:
    result = _tooloo_test(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for stem, (_, label) in GROUPS.items():
        if stem != "test_9_live_stack":  # only with --live
            assert re.search(rf"{re.escape(label)}: (\d+)/\1 tests", result.stdout), label
    passed, failed = map(int, SUMMARY.findall(result.stdout)[-1])
    assert passed >= 32 and failed == 0
    assert result.stdout.rstrip().splitlines()[-1] == f"{passed} passed, 0 failed"


def test_a_broken_module_fails_the_suite_with_exit_1(tmp_path: Path) -> None:
    """A rate limiter that never denies must be caught, and the exit code must say so."""
    sabotage = (
        "from tooloo_cli.resilience import rate_limiter\n"
        "real = rate_limiter.RateLimiter.try_acquire\n"
        "def always_allow(self, client, tokens=1):\n"
        "    return real(self, client, tokens)._replace(allowed=True)\n"
        "rate_limiter.RateLimiter.try_acquire = always_allow\n"
    )
    result = _tooloo_test(tmp_path, "-k", "RateLimiter or rate_limiter", sitecustomize=sabotage)
    assert result.returncode == 1, result.stdout + result.stderr
    passed, failed = map(int, SUMMARY.findall(result.stdout)[-1])
    assert failed >= 1
    assert "RateLimiter:" in result.stdout and "✗ allows up to capacity then denies with retry after" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_keyword_matching_nothing_is_an_error_not_a_pass(tmp_path: Path) -> None:
    result = _tooloo_test(tmp_path, "-k", "no_such_check_anywhere")
    assert result.returncode == 1
    assert "no checks ran" in result.stdout


def test_live_checks_pass_against_a_running_stack_and_fail_clearly_without_one(tmp_path: Path) -> None:
    from tooloo_cli.bench.stack import EphemeralStack
    from tooloo_cli.config import BUILTIN_SERVICES as SERVICE_NAMES

    (tmp_path / "stack").mkdir()
    with EphemeralStack(tmp_path / "stack") as stack:
        stack.start(*SERVICE_NAMES)
        up = _tooloo_test(tmp_path, "--live", "-k", "live_stack", config=stack.config_path)
    down = _tooloo_test(tmp_path, "--live", "-k", "live_stack", config=stack.config_path)
    assert up.returncode == 0, up.stdout
    assert re.search(r"Live stack: (\d+)/\1 tests", up.stdout)
    assert down.returncode == 1 and "is the stack up?" in down.stdout and "Traceback" not in down.stdout

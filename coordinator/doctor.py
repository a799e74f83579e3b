"""``coordinator doctor``: can this machine run instances headless? Every problem comes
with its fix on one line."""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from rich.console import Console

from coordinator.claude_bin import find_claude
from coordinator.errors import CoordinatorError
from coordinator.settings import Settings

AUTH_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str
    fix: str | None = None


def check_claude(flag: str | None, settings: Settings) -> tuple[list[Check], str | None]:
    try:
        found = find_claude(flag, settings.claude_bin)
    except CoordinatorError as exc:
        return [Check("claude", "fail", str(exc), "make install")], None
    try:
        out = subprocess.run(
            [found.path, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        version = out.stdout.strip() or out.stderr.strip()
        ok = out.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        version, ok = str(exc), False
    status = "ok" if ok else "fail"
    fix = None if ok else "reinstall: make install (or point --claude-bin at a working claude)"
    return [Check("claude", status, f"{found.path} ({found.source}): {version}", fix)], (
        found.path if ok else None
    )


def check_auth(claude: str | None) -> Check:
    present = [v for v in AUTH_VARS if os.environ.get(v)]
    base_url = os.environ.get("ANTHROPIC_BASE_URL")
    if present:
        where = f" against {base_url}" if base_url else ""
        return Check("auth", "ok", f"{', '.join(present)} set{where}")
    if claude is not None:
        try:
            from coordinator.commands.probe import probe_init_sync

            init = probe_init_sync(claude, Path.cwd(), placeholder_key=False, timeout=30)
            source = str(init.get("apiKeySource") or "none")
            if source != "none":
                return Check("auth", "ok", f"claude's own login ({source})")
        except CoordinatorError:
            pass
    return Check(
        "auth",
        "warn",
        "no API key or claude login found: real runs will fail with 401",
        "export ANTHROPIC_API_KEY=... (or run 'claude login'), or use --offline for the demo",
    )


def check_root(config_path: Path | None) -> Check:
    if os.geteuid() != 0:
        return Check("permissions", "ok", "not root: every permission mode is available")
    sandbox = os.environ.get("IS_SANDBOX") == "1"
    bypass = False
    if config_path is not None:
        try:
            bypass = "bypassPermissions" in config_path.read_text()
        except OSError:
            bypass = False
    if sandbox:
        return Check("permissions", "ok", "root with IS_SANDBOX=1: bypassPermissions allowed")
    if bypass:
        return Check(
            "permissions",
            "fail",
            "root without IS_SANDBOX=1: claude refuses the config's bypassPermissions",
            "export IS_SANDBOX=1 on a sandbox machine, or use permission_mode acceptEdits",
        )
    return Check(
        "permissions",
        "warn",
        "root: bypassPermissions needs IS_SANDBOX=1 (other modes work)",
        "export IS_SANDBOX=1 if this machine is a disposable sandbox",
    )


def check_database(url: str | None) -> Check:
    from coordinator.db.embedded import left_as_found

    # An embedded server that only the check started is stopped again after it.
    with left_as_found(url):
        return _check_database(url)


def _check_database(url: str | None) -> Check:
    try:
        from coordinator.db.dsn import mask_dsn, resolve_dsn
        from coordinator.db.embedded import run_isolated
        from coordinator.db.postgres import connect

        resolved = resolve_dsn(url)

        async def ping() -> str:
            conn = await connect(resolved.dsn)
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()

        version = run_isolated(ping())
        return Check(
            "postgres", "ok", f"{mask_dsn(resolved.dsn)} ({resolved.source}), server {version}"
        )
    except (TimeoutError, CoordinatorError, OSError) as exc:
        return Check(
            "postgres",
            "fail",
            f"unreachable: {exc}",
            "check --database-url / COORDINATOR_DATABASE_URL, or unset them for the embedded "
            "server; runs still work with --no-db",
        )


def run_doctor(
    console: Console,
    settings: Settings,
    *,
    json_output: bool,
    claude_bin: str | None,
    database_url: str | None,
    config_path: Path | None,
) -> int:
    checks, claude = check_claude(claude_bin, settings)
    checks.append(check_auth(claude))
    checks.append(check_root(config_path))
    checks.append(check_database(settings.database_dsn(database_url)))
    failed = any(c.status == "fail" for c in checks)
    if json_output:
        payload = {"ok": not failed, "checks": [asdict(c) for c in checks]}
        console.print_json(orjson.dumps(payload).decode())
    else:
        marks = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "fail": "[red]✗[/]"}
        for c in checks:
            console.print(f"{marks[c.status]} {c.name:<12} {c.detail}", highlight=False)
            if c.fix:
                console.print(f"  {'':<12} fix: {c.fix}", highlight=False)
    return 1 if failed else 0

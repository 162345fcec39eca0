"""``phd server kek``: the key-encryption key life cycle (status, rotate, rewrap, retire).

Retiring a KEK (staff with access to the key file left, a suspected copy, a yearly rotation):

    phd server kek rotate          a new current KEK in the key file; running servers follow
    phd server kek rewrap          every stored secret re-wrapped under it (resumable)
    phd server kek status          nothing left under the old KEK?
    phd server kek retire KEK_ID   remove it from the key file (refused while anything uses it)

Each step is audited (``key.rotated`` with ``key=kek`` and the step). Output names KEK ids,
kinds and counts only.
"""

from __future__ import annotations

import argparse
from typing import Any

_STEPS = ("status", "rotate", "rewrap", "retire")


def add_parser(cmds: Any) -> None:
    kek = cmds.add_parser(
        "kek", help="key-encryption keys: status, rotate, rewrap, retire (docs/OPERATIONS.md)"
    )
    steps = kek.add_subparsers(dest="kek_command", metavar="KEK_COMMAND", required=True)
    steps.add_parser("status", help="KEKs in the key file and what each still wraps")
    steps.add_parser("rotate", help="add a new current KEK to the key file")
    rewrap = steps.add_parser("rewrap", help="re-wrap every stored secret under the current KEK")
    rewrap.add_argument("--batch", type=_batch, default=200, help="rows per transaction")
    retire = steps.add_parser("retire", help="remove a KEK nothing is wrapped by any more")
    retire.add_argument("kek_id", metavar="KEK_ID")


def _batch(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--batch takes a whole number") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError("--batch must be between 1 and 10000")
    return value


def run(settings: Any, args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server.context import ServerContext
    from hospital_server.keys import LocalKeyFileProvider

    console = Console()
    path = settings.effective_key_file
    provider = LocalKeyFileProvider.load(path)
    ctx = ServerContext.build(settings, broker_probe=lambda: False, key_provider=provider)
    try:
        step = args.kek_command
        if step == "status":
            return _status(console, ctx, provider)
        if step == "rotate":
            kek_id = provider.rotate(path)
            _audit(ctx, kek_id, step="rotate")
            console.print(f"KEK {kek_id} is now current in {path}; running servers follow it")
            console.print("next: [bold]phd server kek rewrap[/bold], then retire the old KEK")
            return 0
        if step == "rewrap":
            return _rewrap(console, ctx, provider, args.batch)
        return _retire(console, ctx, provider, path, args.kek_id)
    finally:
        ctx.close()


def _status(console: Any, ctx: Any, provider: Any) -> int:
    from rich.table import Column, Table

    from hospital_server.kek import KINDS, usage

    used = usage(ctx.sessions)
    current = provider.current_kek_id
    missing = sorted(set(used) - set(provider.kek_ids))
    keks = sorted(set(provider.kek_ids) | set(used))
    # One column per KEK (a few), one row per kind of secret (more): fits 80 columns. A KEK id
    # is copied from here into `retire`, so it is never folded.
    headers = []
    for kek_id in keks:
        if kek_id in missing:
            headers.append(Column(f"[red]{kek_id}\nMISSING[/red]", no_wrap=True, justify="right"))
        else:
            state = "current" if kek_id == current else "in key file"
            headers.append(Column(f"{kek_id}\n{state}", no_wrap=True, justify="right"))
    table = Table("stored secrets", *headers, title="what each key-encryption key wraps")
    for kind in KINDS:
        table.add_row(kind.name, *(str(used.get(k, {}).get(kind.name, 0)) for k in keks))
    console.print(table)
    if missing:
        console.print(
            f"[red]{len(missing)} KEK(s) wrap stored secrets but are not in the key file[/red]: "
            "restore them from the key file backup, or those secrets cannot be opened"
        )
        return 1
    return 0


def _rewrap(console: Any, ctx: Any, provider: Any, batch: int) -> int:
    from rich.progress import Progress

    from hospital_server.kek import rewrap

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("re-wrapping", total=None)
        report = rewrap(
            ctx.sessions, provider, batch=batch, progress=lambda _k, n: bar.advance(task, n)
        )
    _audit(ctx, report.current, step="rewrap", rows=report.total, unreadable=len(report.unreadable))
    parts = ", ".join(f"{n} {kind}" for kind, n in report.rewrapped.items())
    console.print(f"re-wrapped under KEK {report.current}: {parts}")
    if report.unreadable:
        for kind, row_id, kek_id in report.unreadable:
            console.print(f"[red]does not open[/red]: {kind} {row_id} (KEK {kek_id})")
        console.print(
            f"[red]{len(report.unreadable)} secret(s) left as they were[/red]: restore the "
            "missing KEK from the key file backup and run rewrap again"
        )
        return 1
    return 0


def _retire(console: Any, ctx: Any, provider: Any, path: Any, kek_id: str) -> int:
    from hospital_server.kek import usage
    from hospital_server.keys import KeyManagementError

    left = usage(ctx.sessions).get(kek_id, {})
    if any(left.values()):
        counts = ", ".join(f"{n} {kind}" for kind, n in left.items() if n)
        console.print(
            f"[red]error:[/red] KEK {kek_id} still wraps {counts}: run "
            "[bold]phd server kek rewrap[/bold] first (after a rotate)"
        )
        return 2
    try:
        provider.retire(path, kek_id)
    except KeyManagementError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    _audit(ctx, kek_id, step="retire")
    console.print(
        f"KEK {kek_id} removed from {path}; database backups taken before the rewrap now "
        "need the key file backup of their time"
    )
    return 0


def _audit(ctx: Any, kek_id: str, **detail: Any) -> None:
    from hospital_server import audit

    with ctx.sessions() as session:
        audit.record(session, "key.rotated", actor="operator", subject=kek_id, key="kek", **detail)
        session.commit()

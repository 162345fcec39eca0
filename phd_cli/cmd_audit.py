"""``phd audit``: the tamper-evident audit trail (verify, checkpoint).

    phd audit verify        recompute the hash chain and check every signed checkpoint;
                            exit 0 if intact, 1 with the first problems found;
                            --expect SEQ:HASH / --anchors LOG: checkpoints kept outside the
                            database, which someone with database access cannot delete
    phd audit checkpoint    sign the chain's head now (the server also does so every
                            PHD_SERVER_AUDIT_CHECKPOINT_SECONDS); prints it as JSON, for
                            shipping to a store outside the database

Both need the database and the key file (the checkpoint key is wrapped by the KEK), as
``phd server`` does; ``--dev`` selects the dev profile. Output names seqs, hashes, kids and
counts, never an entry's content. See docs/audit.md.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("audit", help="tamper-evident audit trail: verify, checkpoint")
    p.add_argument("--dev", action="store_true", help="dev profile: embedded defaults")
    cmds = p.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND", required=True)
    verify = cmds.add_parser("verify", help="check the hash chain and the signed checkpoints")
    verify.add_argument(
        "--expect",
        action="append",
        default=[],
        type=_anchor,
        metavar="SEQ:HASH",
        help="a checkpoint kept outside the database (repeatable)",
    )
    verify.add_argument(
        "--anchors",
        type=Path,
        metavar="LOG",
        help="a log file: every 'audit checkpoint seq=... hash=...' line in it is expected",
    )
    cmds.add_parser("checkpoint", help="sign the chain's head now; prints it as JSON")
    p.set_defaults(handler=run)


_ANCHOR = re.compile(r"^(\d{1,18}):([0-9a-f]{64})$")
_LOGGED = re.compile(r"audit checkpoint seq=(\d{1,18}) hash=([0-9a-f]{64})")


def _anchor(text: str) -> tuple[int, str]:
    match = _ANCHOR.match(text)
    if match is None:
        raise argparse.ArgumentTypeError("--expect takes SEQ:HASH (a seq, 64 hex digits)")
    return int(match[1]), match[2]


def _expected(args: argparse.Namespace) -> dict[int, str]:
    """The anchors given, by seq; a seq named twice with two hashes is itself a finding."""
    pairs = list(args.expect)
    if args.anchors is not None:
        pairs += [(int(m[1]), m[2]) for m in _LOGGED.finditer(args.anchors.read_text())]
    out: dict[int, str] = {}
    for seq, chain_hash in pairs:
        if out.setdefault(seq, chain_hash) != chain_hash:
            raise ValueError(f"the anchors give two hashes for seq {seq}")
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server.context import ServerContext
    from hospital_server.settings import Settings

    expected: dict[int, str] = {}
    if args.audit_command == "verify":
        try:
            expected = _expected(args)
        except (OSError, ValueError) as exc:
            Console(stderr=True).print(f"[red]error:[/red] {exc}")
            return 2
    settings = Settings(profile="dev") if args.dev else Settings()
    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    try:
        if args.audit_command == "checkpoint":
            return _checkpoint(ctx)
        return _verify(Console(), ctx, expected)
    finally:
        ctx.close()


def _checkpoint(ctx: Any) -> int:
    from hospital_server.auditlog import checkpoint_now

    made = checkpoint_now(ctx.sessions, ctx.key_provider)
    if made is None:
        print(json.dumps({"checkpoint": None, "reason": "no entries since the newest one"}))
        return 0
    print(
        json.dumps(
            {
                "checkpoint": {
                    "seq": made.seq,
                    "chain_hash": made.chain_hash,
                    "at": made.at.isoformat(),
                    "kid": made.kid,
                }
            }
        )
    )
    return 0


def _verify(console: Any, ctx: Any, expected: dict[int, str]) -> int:
    from rich.progress import Progress

    from hospital_server.auditlog import verify

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("verifying the audit chain", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = verify(ctx.sessions, ctx.key_provider, expect=expected, progress=progress)
    console.print(
        f"{report.entries} entries, head seq {report.head_seq}, checkpoints: "
        f"{report.checkpoints} (newest at seq {report.newest_checkpoint}; "
        f"{report.unanchored} entries after it)"
    )
    if report.intact:
        console.print("[green]audit chain intact[/green]")
        return 0
    console.print(f"[red]audit chain broken: problems: {report.problem_count}[/red]")
    for problem in report.problems:
        detail = f" ({problem.detail})" if problem.detail else ""
        console.print(f"  {problem.kind} at seq {problem.seq}{detail}")
    console.print(
        "next: keep the database as it is (evidence), compare it with a backup and the "
        "logged checkpoints, see docs/OPERATIONS.md 'Audit trail'"
    )
    return 1

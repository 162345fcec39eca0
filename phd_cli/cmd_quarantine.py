"""``phd server quarantine``: review refused envelopes and release them through ingest again.

    phd server quarantine list [--reason R] [--device D] [--gateway G] [--since T] [--json]
    phd server quarantine show DIGEST                 metadata and what the reason means
    phd server quarantine release DIGEST... --actor NAME
    phd server quarantine release --reason R [--device D] --actor NAME

A digest may be given as a unique prefix of at least 8 hex digits. Release re-runs the full
ingest on the kept sealed bytes under the recorded gateway (hospital_server.quarantine); it is
audited (``quarantine.released``). Output names digests, reason codes, gateway and device ids,
sizes and times only; never the sealed bytes.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

_AGE = re.compile(r"^(\d{1,6})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_PREFIX = 16  # digest digits shown in tables


def add_parser(cmds: Any, settings: Callable[[argparse.Namespace], Any]) -> None:
    q = cmds.add_parser(
        "quarantine", help="review refused envelopes; release them through ingest again"
    )
    steps = q.add_subparsers(dest="quarantine_command", metavar="QUARANTINE_COMMAND")
    steps.required = True
    listing = steps.add_parser("list", help="quarantined envelopes, newest first, and counts")
    _filters(listing)
    listing.add_argument("--limit", type=_limit, default=50, help="rows shown (default 50)")
    listing.add_argument("--json", action="store_true", help="JSON instead of tables")
    show = steps.add_parser("show", help="one envelope's metadata and what its reason means")
    show.add_argument("digest", metavar="DIGEST", help="digest or unique prefix (8+ hex)")
    show.add_argument("--json", action="store_true", help="JSON instead of text")
    rel = steps.add_parser(
        "release", help="re-run ingest on kept envelopes; the stored ones leave quarantine"
    )
    rel.add_argument("digests", nargs="*", metavar="DIGEST", help="digest or unique prefix")
    rel.add_argument("--reason", type=_reason, help="release the oldest envelopes of a reason")
    rel.add_argument("--device", metavar="DEVICE_ID", help="with --reason: of this device only")
    rel.add_argument("--actor", required=True, help="who releases (recorded in the audit trail)")
    q.set_defaults(handler=lambda args: run(settings(args), args))


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", type=_reason, help="a public reason code (e.g. not_enrolled)")
    p.add_argument("--device", metavar="DEVICE_ID")
    p.add_argument("--gateway", metavar="GATEWAY_ID")
    p.add_argument(
        "--since", type=_since, help="received at or after: ISO date/time (UTC) or 30m, 24h, 7d"
    )


def _reason(text: str) -> Any:
    from phd_protocol.errors import RejectReason

    try:
        return RejectReason(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"reason must be one of {', '.join(RejectReason)}"
        ) from None


def _since(text: str) -> datetime:
    age = _AGE.match(text)
    if age:
        return datetime.now(UTC) - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--since takes an ISO date/time or 30m, 24h, 7d") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--limit takes a whole number") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError("--limit must be between 1 and 10000")
    return value


def run(settings: Any, args: argparse.Namespace) -> int:
    from hospital_server.context import ServerContext

    ctx = ServerContext.build(settings, broker_probe=lambda: False)
    try:
        step = args.quarantine_command
        if step == "list":
            return _list(ctx, args)
        if step == "show":
            return _show(ctx, args)
        return _release(ctx, args)
    finally:
        ctx.close()


def _list(ctx: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Column, Table

    from hospital_server import quarantine

    filters = quarantine.Filters(
        reason=args.reason, device_id=args.device, gateway_id=args.gateway, since=args.since
    )
    with ctx.sessions() as session:
        rows = quarantine.entries(session, filters, limit=args.limit)
        counts = quarantine.count_by_reason(session, filters)
    total = sum(counts.values())
    if args.json:
        doc = {"total": total, "by_reason": counts, "entries": [_doc(e) for e in rows]}
        print(json.dumps(doc, indent=2))
        return 0
    console = Console()
    table = Table(title=f"quarantined envelopes: {len(rows)} of {total}, newest first")
    for name in ("digest", "reason", "gateway", "device", "size", "received (UTC)"):
        table.add_column(name, no_wrap=True, justify="right" if name == "size" else "left")
    for e in rows:
        table.add_row(
            e.digest[:_PREFIX],
            e.reason,
            e.gateway_id,
            e.device_id or "-",
            str(e.size) if e.kept else "not kept",
            _time(e.received_at),
        )
    console.print(table)
    summary = Table("reason", Column("count", justify="right"), title="by reason")
    for reason, n in counts.items():
        summary.add_row(reason, str(n))
    console.print(summary)
    return 0


def _show(ctx: Any, args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server import quarantine

    with ctx.sessions() as session:
        entry = _find(session, args.digest)
    if entry is None:
        return 2
    if args.json:
        print(json.dumps({**_doc(entry), "meaning": entry.meaning}, indent=2))
        return 0
    kept = (
        f"{entry.size} bytes, still sealed"
        if entry.kept
        else "not kept (its patient was erased): it cannot be released"
    )
    lines = [
        ("digest", entry.digest),
        ("reason", entry.reason),
        ("meaning", entry.meaning or "not a public reason code"),
        ("gateway", entry.gateway_id),
        ("device", entry.device_id or "-"),
        ("credential", entry.kid or "-"),
        ("envelope", kept),
        ("received", _time(entry.received_at)),
    ]
    console = Console(highlight=False)
    for label, value in lines:
        console.print(f"{label:<11} {value}", markup=False, soft_wrap=True)
    if entry.kept:
        console.print(
            f"release: phd server quarantine release {entry.digest[:_PREFIX]} --actor NAME "
            f"(max {quarantine.MAX_RELEASE} per run)",
            markup=False,
            soft_wrap=True,
        )
    return 0


def _release(ctx: Any, args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server import quarantine
    from hospital_server.ingest.runner import build_ingestor
    from hospital_server.staff import USERNAME

    err = Console(stderr=True, highlight=False)
    if bool(args.digests) == (args.reason is not None):
        err.print("[red]error:[/red] give DIGEST... or --reason, not both or neither")
        return 2
    if args.device is not None and args.reason is None:
        err.print("[red]error:[/red] --device goes with --reason")
        return 2
    if not USERNAME.match(args.actor):
        err.print("[red]error:[/red] --actor must be 1-64 of [A-Za-z0-9_.-]")
        return 2
    if len(args.digests) > quarantine.MAX_RELEASE:
        err.print(f"[red]error:[/red] at most {quarantine.MAX_RELEASE} digests per run")
        return 2
    console = Console(highlight=False)
    remaining = 0
    with ctx.sessions() as session:
        if args.reason is not None:
            filters = quarantine.Filters(reason=args.reason, device_id=args.device)
            targets = quarantine.entries(
                session, filters, limit=quarantine.MAX_RELEASE, oldest_first=True
            )
            remaining = sum(quarantine.count_by_reason(session, filters).values()) - len(targets)
            selection = {"reason": args.reason.value}
            if args.device is not None:
                selection["device"] = args.device
        else:
            targets = []
            for prefix in args.digests:
                try:
                    targets.append(quarantine.find(session, prefix))
                except quarantine.DigestNotFoundError:
                    console.print(
                        f"{prefix.lower()}: not in quarantine (released, disposed of, or never "
                        "refused); nothing to do",
                        markup=False,
                    )
                except (ValueError, quarantine.AmbiguousDigestError):
                    _find(session, prefix)  # prints why
                    return 2
            selection = {"by": "digest"}
        if not targets:
            console.print("nothing to release")
            return 0
        try:
            done = quarantine.release(
                session,
                build_ingestor(ctx),
                targets,
                actor=args.actor,
                selection=selection,
            )
        except ValueError as exc:  # a --device that is not an id
            err.print(f"[red]error:[/red] {exc}", markup=False)
            return 2
    for r in done:
        console.print(f"{r.digest[:_PREFIX]}  {_said(r)}", markup=False)
    left = sum(r.left_quarantine for r in done)
    console.print(
        f"released {left} of {len(done)}; {len(done) - left} stay in quarantine "
        f"(audited as {quarantine.EVENT} by {args.actor})",
        markup=False,
    )
    if remaining:
        console.print(f"{remaining} more match: run again to release them", markup=False)
    return 0 if left == len(done) else 1


def _said(r: Any) -> str:
    from hospital_server.quarantine import Outcome

    if r.outcome is Outcome.STORED:
        return "stored: released"
    if r.outcome is Outcome.DUPLICATE:
        return "duplicate (already stored): released"
    if r.outcome is Outcome.REFUSED:
        was = "" if r.reason == r.previous else f" (was {r.previous})"
        return f"still refused: {r.reason}{was}"
    if r.outcome is Outcome.NOT_KEPT:
        return "cannot be released: its sealed bytes were not kept (patient erased)"
    if r.outcome is Outcome.GONE:
        return "no longer in quarantine; nothing to do"
    return "database busy: stays in quarantine, try again"


def _find(session: Any, prefix: str) -> Any:
    """The entry, or None after saying on stderr why there is none."""
    from rich.console import Console

    from hospital_server import quarantine

    err = Console(stderr=True, highlight=False)
    shown = prefix.lower()  # echoed only once it is known to be hex
    try:
        return quarantine.find(session, prefix)
    except ValueError:
        # Not echoed: what is not a digest could be anything an operator typed.
        err.print("error: DIGEST must be 8 to 64 hex digits (a digest or its prefix)")
    except quarantine.DigestNotFoundError:
        err.print(f"error: no quarantined envelope has a digest starting {shown}", markup=False)
    except quarantine.AmbiguousDigestError:
        err.print(
            f"error: more than one quarantined envelope has a digest starting {shown}; "
            "give more digits",
            markup=False,
        )
    return None


def _doc(e: Any) -> dict[str, Any]:
    return {
        "digest": e.digest,
        "reason": e.reason,
        "gateway": e.gateway_id,
        "device": e.device_id,
        "credential": e.kid,
        "size": e.size,
        "kept": e.kept,
        "received_at": _time(e.received_at),
    }


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

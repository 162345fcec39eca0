"""``phd export``: pseudonymised research exports (docs/export.md).

    phd export project-create --name N --purpose P --approval REF --profile safe_harbor|shifted
                              --k 5 --expires-days 365
    phd export run PROJECT_ID --out DIR        write DIR/<export>.csv and .manifest.json (0600)
    phd export verify MANIFEST                  the manifest's signature and the CSV's digest
    phd export destroy EXPORT_ID                overwrite and delete an export's files
    phd export expire                           destroy the exports of expired projects (cron)

Needs the database and the key file, as ``phd server`` does (``--dev``: the dev profile).
Output names ids, paths and counts only.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="pseudonymised research exports (docs/export.md)")
    p.add_argument("--dev", action="store_true", help="dev profile: embedded defaults")
    cmds = p.add_subparsers(dest="export_command", metavar="EXPORT_COMMAND", required=True)
    create = cmds.add_parser("project-create", help="register a research project")
    create.add_argument("--name", required=True)
    create.add_argument("--purpose", required=True)
    create.add_argument("--approval", required=True, help="ethics approval reference")
    create.add_argument("--profile", required=True, choices=("safe_harbor", "shifted"))
    create.add_argument("--k", type=int, default=5, help="k-anonymity over age bands (2-100)")
    create.add_argument("--expires-days", type=int, required=True, help="1-1830")
    run_p = cmds.add_parser("run", help="write a project's export")
    run_p.add_argument("project_id", metavar="PROJECT_ID")
    run_p.add_argument("--out", type=Path, required=True, help="directory for the files")
    check = cmds.add_parser("verify", help="check a manifest's signature and its CSV's digest")
    check.add_argument("manifest", type=Path, metavar="MANIFEST")
    destroy = cmds.add_parser("destroy", help="overwrite and delete an export's files")
    destroy.add_argument("export_id", metavar="EXPORT_ID")
    cmds.add_parser("expire", help="destroy every export of an expired project")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hospital_server.context import ServerContext
    from hospital_server.research import ExportError
    from hospital_server.settings import Settings

    console, err = Console(), Console(stderr=True)
    if args.export_command == "project-create" and not 1 <= args.expires_days <= 1830:
        err.print("[red]error:[/red] --expires-days must be between 1 and 1830")
        return 2
    ctx = ServerContext.build(
        Settings(profile="dev") if args.dev else Settings(), broker_probe=lambda: False
    )
    try:
        return _COMMANDS[args.export_command](console, ctx, args)
    except ExportError as exc:
        err.print(f"[red]refused:[/red] {exc.reason} (docs/export.md)")
        return 1
    finally:
        ctx.close()


def _create(console: Any, ctx: Any, args: argparse.Namespace) -> int:
    from hospital_server.models import utcnow
    from hospital_server.research import DateProfile, create_project

    with ctx.sessions() as session:
        project = create_project(
            session,
            ctx.key_provider,
            name=args.name,
            purpose=args.purpose,
            approval_ref=args.approval,
            date_profile=DateProfile(args.profile),
            k=args.k,
            expires_at=utcnow() + timedelta(days=args.expires_days),
            actor="operator",
        )
        session.commit()
        console.print(f"project {project.id} expires {project.expires_at:%Y-%m-%d}")
    return 0


def _run(console: Any, ctx: Any, args: argparse.Namespace) -> int:
    from hospital_server.research import run_export

    with console.status("exporting"):
        result = run_export(
            ctx.sessions,
            ctx.keys,
            ctx.key_provider,
            args.project_id,
            out_dir=args.out,
            actor="operator",
        )
    console.print(
        f"export {result.export_id}: {result.rows} rows of {result.patients} patients "
        f"({result.suppressed_patients} suppressed for k-anonymity)\n"
        f"  {result.csv_path}\n  {result.manifest_path}"
    )
    return 0


def _verify(console: Any, ctx: Any, args: argparse.Namespace) -> int:
    from hospital_server.research import verify_manifest

    problem = verify_manifest(ctx.sessions, ctx.key_provider, args.manifest)
    if problem is None:
        console.print("[green]manifest signature and CSV digest verify[/green]")
        return 0
    console.print(f"[red]does not verify: {problem}[/red]")
    return 1


def _destroy(console: Any, ctx: Any, args: argparse.Namespace) -> int:
    from hospital_server.research import destroy_export

    with ctx.sessions() as session:
        done = destroy_export(session, args.export_id, actor="operator")
        session.commit()
    console.print(f"export {args.export_id} " + ("destroyed" if done else "was already destroyed"))
    return 0


def _expire(console: Any, ctx: Any, _args: argparse.Namespace) -> int:
    from hospital_server.research import expire

    console.print(f"destroyed {expire(ctx.sessions, actor='retention')} expired exports")
    return 0


_COMMANDS = {
    "project-create": _create,
    "run": _run,
    "verify": _verify,
    "destroy": _destroy,
    "expire": _expire,
}

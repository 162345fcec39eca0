"""``phd pki``: create and operate the hospital PKI (init, issue-gateway, revoke, crl, show).

A thin shell over :mod:`hospital_server.pki.ca`: parse arguments, read a passphrase from an
environment variable (never from the command line, where ``ps`` and shell history would keep
it), call the CA, render the result. It never prints key material.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("certs/dev")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pki", help="create and operate the hospital PKI (certs/)")
    pki = p.add_subparsers(dest="pki_command", metavar="PKI_COMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help="PKI directory (default: %(default)s)",
    )
    common.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="name of an environment variable holding the CA keys' passphrase",
    )

    init = pki.add_parser(
        "init",
        parents=[common],
        help="create root, issuing CAs, service certificates, ingest and audit keys",
    )
    init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="H",
        help="extra DNS name or IP for the broker/server certificates (repeatable); "
        "localhost, 127.0.0.1 and ::1 are always included",
    )
    init.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="NAME",
        help="ingest worker client certificate to create (repeatable; default ingest-1, ingest-2)",
    )
    init.add_argument(
        "--force", action="store_true", help="replace existing keys (destroys the old PKI)"
    )
    init.set_defaults(handler=_init)

    gw = pki.add_parser("issue-gateway", parents=[common], help="issue a gateway client cert")
    gw.add_argument("name", help="gateway name: certificate CN and MQTT identity")
    gw.add_argument("--days", type=int, default=397, help="validity in days (default 397)")
    gw.set_defaults(handler=_issue_gateway)

    rv = pki.add_parser("revoke", parents=[common], help="revoke a certificate, refresh CRLs")
    rv.add_argument("target", metavar="SERIAL|NAME", help="hex serial or certificate name")
    rv.add_argument(
        "--reason",
        required=True,
        help="RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged, "
        "superseded, cessationOfOperation, certificateHold, privilegeWithdrawn",
    )
    rv.set_defaults(handler=_revoke)

    crl = pki.add_parser("crl", parents=[common], help="regenerate every CRL and the bundle")
    crl.set_defaults(handler=_crl)

    show = pki.add_parser("show", parents=[common], help="list certificates, CRLs and keys")
    show.set_defaults(handler=_show)

    rot = pki.add_parser(
        "rotate-ingest-key", parents=[common], help="new active ingest HPKE key, old one retiring"
    )
    rot.set_defaults(handler=_rotate)


def _passphrase(args: argparse.Namespace) -> bytes | None:
    var = args.passphrase_env
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        from hospital_server.pki.errors import PkiError, PkiErrorReason

        raise PkiError(PkiErrorReason.KEY_LOCKED, f"environment variable {var} is not set or empty")
    return value.encode()


def _console() -> Any:
    from rich.console import Console

    # emoji=False: fingerprints such as "48:CD:07" would otherwise render ":CD:" as an emoji.
    return Console(emoji=False)


def _run(args: argparse.Namespace, action: Any) -> int:
    from hospital_server.pki.errors import PkiError
    from phd_protocol.pki import CertificateError

    console = _console()
    try:
        action(console)
    except (PkiError, CertificateError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    return 0


def _layout(args: argparse.Namespace) -> Any:
    from hospital_server.pki.layout import PkiLayout

    return PkiLayout(args.dir)


def _init(args: argparse.Namespace) -> int:
    from hospital_server.pki.ca import DEFAULT_HOSTS, DEFAULT_INGEST_WORKERS, init_pki

    def action(console: Any) -> None:
        report = init_pki(
            _layout(args),
            hosts=[*DEFAULT_HOSTS, *args.host],
            passphrase=_passphrase(args),
            force=args.force,
            ingest_workers=args.worker or DEFAULT_INGEST_WORKERS,
        )
        console.print(
            f"PKI in [bold]{report.root}[/bold]: {len(report.created)} file(s) written, "
            f"{len(report.kept)} kept"
        )
        for name in report.created:
            console.print(f"  [green]+[/green] {name}")
        if report.kept and not args.force:
            console.print("existing keys were kept; use --force to replace them")

    return _run(args, action)


def _issue_gateway(args: argparse.Namespace) -> int:
    from hospital_server.pki.ca import issue_gateway

    def action(console: Any) -> None:
        layout = _layout(args)
        path = issue_gateway(layout, args.name, days=args.days, passphrase=_passphrase(args))
        console.print(f"gateway [bold]{args.name}[/bold]: {path}")
        console.print(f"  key   {layout.gateway_key(args.name)} (0600)")
        console.print(f"  chain {layout.gateway_chain(args.name)}")

    return _run(args, action)


def _revoke(args: argparse.Namespace) -> int:
    from hospital_server.pki.ca import revoke

    def action(console: Any) -> None:
        records = revoke(_layout(args), args.target, args.reason, passphrase=_passphrase(args))
        for r in records:
            console.print(f"revoked {r.kind} [bold]{r.name}[/bold] serial {r.serial:x}")
        console.print("CRLs regenerated; reload the broker's CRL (see certs/README.md)")

    return _run(args, action)


def _crl(args: argparse.Namespace) -> int:
    from hospital_server.pki.ca import generate_crls

    def action(console: Any) -> None:
        for path in generate_crls(_layout(args), passphrase=_passphrase(args)):
            console.print(f"wrote {path}")

    return _run(args, action)


def _rotate(args: argparse.Namespace) -> int:
    from hospital_server.pki.ca import rotate_ingest_key

    def action(console: Any) -> None:
        kid = rotate_ingest_key(_layout(args))
        console.print(f"new active ingest key {kid}; the previous one is now retiring")

    return _run(args, action)


_STATUS_STYLE = {
    "valid": "green",
    "current": "green",
    "revoked": "red",
    "expired": "red",
    "not yet valid": "yellow",
    "renew soon": "yellow",
}


def _styled(status: str) -> str:
    style = _STATUS_STYLE.get(status, "white")
    return f"[{style}]{status}[/{style}]"


def _show(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from hospital_server.pki.ca import crl_status, show
    from hospital_server.pki.store import read_json

    def action(console: Any) -> None:
        layout = _layout(args)
        now = datetime.now(UTC)
        table = Table(title=f"certificates in {layout.root}")
        for col in ("name", "kind", "serial", "subject", "valid from", "valid until",
                    "SHA-256 fingerprint", "status"):  # fmt: skip
            table.add_column(col, overflow="fold")
        for r in show(layout):
            status = r.status(now)
            if r.revocation_reason:
                status = f"{status} ({r.revocation_reason})"
            table.add_row(
                escape(r.name),
                r.kind,
                f"{r.serial:x}",
                escape(r.subject),
                r.not_before.strftime("%Y-%m-%d %H:%M"),
                r.not_after.strftime("%Y-%m-%d %H:%M"),
                r.fingerprint,
                _styled(status) if status in _STATUS_STYLE else f"[red]{status}[/red]",
            )
        console.print(table)

        crls = Table(title="certificate revocation lists")
        for col in ("CA", "number", "entries", "this update", "next update", "status"):
            crls.add_column(col)
        for c in crl_status(layout):
            crls.add_row(
                c.name,
                str(c.number),
                str(c.entries),
                c.this_update.strftime("%Y-%m-%d %H:%M"),
                c.next_update.strftime("%Y-%m-%d %H:%M"),
                _styled(c.state(now)),
            )
        console.print(crls)

        keys = Table(title="ingest HPKE keys (keyring.json)")
        for col in ("kid", "status", "created", "private file"):
            keys.add_column(col)
        for entry in read_json(layout.ingest_keyring, []):
            keys.add_row(
                str(entry.get("kid")),
                str(entry.get("status")),
                str(entry.get("created")),
                str(entry.get("private_file")),
            )
        console.print(keys)

    return _run(args, action)

"""`trainyard-server tokens add|list|revoke`: manage the token file a server reads
with --auth-tokens (a running server notices the change within seconds)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

from server.domain.principal import ROLES
from server.security.tokens import TokenFile, TokenFileError, check_group, parse_duration


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainyard-server tokens", description="Manage a Trainyard token file."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    default_file = os.environ.get("TRAINYARD_AUTH_TOKENS")

    def file_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--file",
            default=default_file,
            required=default_file is None,
            help="the token file (TRAINYARD_AUTH_TOKENS)",
        )

    add = sub.add_parser("add", help="add a token and print it once")
    file_arg(add)
    add.add_argument("--principal", required=True, help="who the token stands for")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument(
        "--group",
        action="append",
        required=True,
        help="resource group the role holds in; repeat for several, '*' for all",
    )
    add.add_argument("--expires", default="90d", help="30d, 12h, 45m, 2w or never (default 90d)")
    add.add_argument(
        "--subject",
        help="map this client certificate subject (mutual TLS, e.g. 'CN=ci,O=acme') to "
        "the principal instead of making a token",
    )

    ls = sub.add_parser("list", help="list tokens and certificate subjects (never a token)")
    file_arg(ls)

    revoke = sub.add_parser("revoke", help="remove a token by id, or every one of a principal")
    file_arg(revoke)
    revoke.add_argument("ident", help="token id (tok_…, sub_…) or principal name")
    return parser


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tokens = TokenFile(args.file)
    try:
        if args.command == "add":
            groups = [check_group(g) for g in args.group]
            ident, token = tokens.add(
                args.principal,
                {g: args.role for g in groups},
                parse_duration(args.expires),
                subject=args.subject,
            )
            if token:
                note = f"# {ident} for {args.principal}; shown once, keep it secret"
                print(note, file=sys.stderr)
                print(token)
            else:
                print(ident)
        elif args.command == "list":
            for entry in tokens.entries():
                roles = ",".join(f"{g}={r}" for g, r in sorted(entry["roles"].items()))
                who = entry.get("subject", "")
                print(
                    f"{entry['id']}\t{entry['principal']}\t{roles}\t"
                    f"expires {_when(entry.get('expires_at'))}" + (f"\t{who}" if who else "")
                )
        else:
            removed = tokens.revoke(args.ident)
            if not removed:
                print(f"no token {args.ident!r}", file=sys.stderr)
                return 1
            for ident in removed:
                print(f"revoked {ident}")
    except TokenFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

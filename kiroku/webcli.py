"""`kiroku serve` and `kiroku users ...`: the web app and the people who may use it."""

from __future__ import annotations

import getpass
import os
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

users_app = typer.Typer(help="Users of the web app (利用者): add, list, disable, API tokens.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _users():  # -> processors.archive.users.Users
    from kiroku import wiring
    from kiroku.config import load_settings
    from processors.archive.users import Users

    return Users(wiring.catalog(load_settings()).engine)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option(help="閲覧者, 文書管理者, 管理者 or 監査者")] = "閲覧者",
    clearance: Annotated[str, typer.Option(help="取扱資格: 1, 2, 3C, 3B or 3A")] = "2",
) -> None:
    """Add a user; the password comes from KIROKU_PASSWORD or is asked for (twice)."""
    from processors.archive.users import UserError

    password = os.environ.get("KIROKU_PASSWORD")
    if not password:
        password = getpass.getpass("パスワード: ")
        if getpass.getpass("もう一度: ") != password:
            err.print("[red]パスワードが一致しません。")
            raise typer.Exit(1)
    try:
        user = _users().add(name, password, role=role, clearance=clearance)
    except UserError as exc:
        err.print(f"[red]{exc}")
        raise typer.Exit(1) from exc
    err.print(f"利用者 {user.name} を追加しました（{user.role}、取扱資格 {user.clearance}）")


@users_app.command("list")
def users_list() -> None:
    """Every user with role, clearance and whether they are disabled."""
    table = Table("ユーザー名", "権限", "取扱資格", "状態")
    for u in _users().list():
        table.add_row(u.name, u.role, u.clearance, "無効" if u.disabled else "有効")
    console.print(table)


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="login name")]) -> None:
    """Disable a user at once: their sessions and API tokens stop working."""
    from processors.archive.users import UserError

    try:
        _users().disable(name)
    except UserError as exc:
        err.print(f"[red]{exc}")
        raise typer.Exit(1) from exc
    err.print(f"利用者 {name} を無効にしました")


@users_app.command("token")
def users_token(name: Annotated[str, typer.Argument(help="login name")]) -> None:
    """A new API token for /api/search (Authorization: Bearer ...); shown only now."""
    from processors.archive.users import UserError

    try:
        print(_users().new_token(name))
    except UserError as exc:
        err.print(f"[red]{exc}")
        raise typer.Exit(1) from exc


def serve(host: Annotated[Optional[str], typer.Option(help="address to listen on (default from kiroku.toml [web])")] = None,
          port: Annotated[Optional[int], typer.Option(help="port (default 8080)")] = None) -> None:
    """The archivists' web app: search, record pages, corrections, 管理簿 and 廃棄・移管."""
    import uvicorn

    from kiroku.config import load_settings
    from web.app import create_app

    settings = load_settings()
    host, port = host or settings.web_host, port or settings.web_port
    err.print(f"kiroku web: http://{host}:{port}/  (Ctrl-C stops)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)

"""Who may use the web app: local users, their sessions, API tokens and saved searches.

Kept in the catalog database (SQLite or PostgreSQL, the same engine), so that `kiroku
users add` on the command line and the web app see the same people without another
service. Passwords are hashed with Argon2id (argon2-cffi, the maintained binding of the
reference implementation); session and API tokens are random and only their SHA-256 is
stored, so a copy of the database lets nobody log in.

Roles (権限):
- 閲覧者: search, read records, download PDFs;
- 文書管理者: and correct metadata, run the records-management screens (管理簿, 廃棄/移管
  承認, legal hold, 延長);
- 管理者: everything, the audit log included;
- 監査者: search and read, and the audit log (an auditor checks, does not change).
Clearance (取扱資格) is one of processors.archive.query.CLEARANCES.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, String, Table, Text, delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from processors.archive.query import CLEARANCES

__all__ = ["ROLES", "User", "UserError", "Users", "SavedSearch"]

ROLES: tuple[str, ...] = ("閲覧者", "文書管理者", "管理者", "監査者")
MIN_PASSWORD = 10
SESSION_HOURS = 10  # one working day; the cookie goes with the browser session anyway

metadata = MetaData()
users_table = Table(
    "web_users", metadata,
    Column("name", String(100), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(20), nullable=False),
    Column("clearance", String(4), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
)
sessions_table = Table(
    "web_sessions", metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("user", String(100), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("expires_at", DateTime, nullable=False),
)
tokens_table = Table(
    "web_api_tokens", metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("user", String(100), nullable=False),
    Column("created_at", DateTime, nullable=False),
)
saved_table = Table(
    "web_saved_searches", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", String(100), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("query", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown name as slow as for a known one.
_DUMMY_HASH = _hasher.hash("kiroku-no-such-user")


class UserError(ValueError):
    """A request about users that cannot be done; the message is Japanese, for people."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    clearance: str
    disabled: bool = False

    @property
    def can_manage(self) -> bool:
        """Correct metadata and do records management."""
        return self.role in ("文書管理者", "管理者")

    @property
    def can_audit(self) -> bool:
        return self.role in ("管理者", "監査者")


@dataclass(frozen=True)
class SavedSearch:
    id: int
    name: str
    query: str
    created_at: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(row: object) -> User:
    return User(row.name, row.role, row.clearance, bool(row.disabled))  # type: ignore[attr-defined]


class Users:
    """The users, sessions, tokens and saved searches in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    # ---------------------------------------------------------------- users

    def add(self, name: str, password: str, *, role: str, clearance: str) -> User:
        name = name.strip()
        if not name or len(name) > 100 or any(c.isspace() for c in name):
            raise UserError("ユーザー名は空白を含まない100文字以内にしてください。")
        if role not in ROLES:
            raise UserError(f"権限「{role}」はありません。{' / '.join(ROLES)} のいずれかです。")
        if clearance not in CLEARANCES:
            raise UserError(f"取扱資格「{clearance}」はありません。{' / '.join(CLEARANCES)} のいずれかです。")
        if len(password) < MIN_PASSWORD:
            raise UserError(f"パスワードは{MIN_PASSWORD}文字以上にしてください。")
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(users_table).values(name=name, password_hash=_hasher.hash(password), role=role,
                                                        clearance=clearance, disabled=False, created_at=_now()))
        except IntegrityError:
            raise UserError(f"ユーザー「{name}」はすでに登録されています。") from None
        return User(name, role, clearance)

    def get(self, name: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users_table).where(users_table.c.name == name)).first()
        return _user(row) if row else None

    def list(self) -> list[User]:
        with self.engine.connect() as conn:
            return [_user(r) for r in conn.execute(select(users_table).order_by(users_table.c.name))]

    def disable(self, name: str) -> None:
        """Disable a user: their sessions and API tokens stop working at once (nothing is deleted,
        the audit log keeps naming them)."""
        with self.engine.begin() as conn:
            if conn.execute(update(users_table).where(users_table.c.name == name).values(disabled=True)).rowcount == 0:
                raise UserError(f"ユーザー「{name}」は登録されていません。")
            conn.execute(delete(sessions_table).where(sessions_table.c.user == name))
            conn.execute(delete(tokens_table).where(tokens_table.c.user == name))

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the name and password are right and the user is enabled."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users_table).where(users_table.c.name == name)).first()
        try:
            _hasher.verify(row.password_hash if row else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row.disabled:
            return None
        if _hasher.check_needs_rehash(row.password_hash):
            with self.engine.begin() as conn:
                conn.execute(update(users_table).where(users_table.c.name == name)
                             .values(password_hash=_hasher.hash(password)))
        return _user(row)

    # ---------------------------------------------------------------- sessions and tokens

    def new_session(self, user: User) -> tuple[str, str]:
        """(session token for the cookie, CSRF token for the forms)."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(delete(sessions_table).where(sessions_table.c.expires_at < _now()))
            conn.execute(insert(sessions_table).values(token_sha256=_sha(token), user=user.name, csrf=csrf,
                                                       expires_at=_now() + dt.timedelta(hours=SESSION_HOURS)))
        return token, csrf

    def session(self, token: str | None) -> tuple[User, str] | None:
        """(user, CSRF token) of a live session of an enabled user."""
        if not token:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(users_table, sessions_table.c.csrf)
                .join(sessions_table, sessions_table.c.user == users_table.c.name)
                .where(sessions_table.c.token_sha256 == _sha(token), sessions_table.c.expires_at > _now(),
                       users_table.c.disabled.is_(False))).first()
        return (_user(row), row.csrf) if row else None

    def end_session(self, token: str | None) -> None:
        if token:
            with self.engine.begin() as conn:
                conn.execute(delete(sessions_table).where(sessions_table.c.token_sha256 == _sha(token)))

    def new_token(self, name: str) -> str:
        """A new API token for `name` (shown once; only its hash is kept)."""
        user = self.get(name)
        if user is None or user.disabled:
            raise UserError(f"ユーザー「{name}」は登録されていないか、無効です。")
        token = "kiroku_" + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(insert(tokens_table).values(token_sha256=_sha(token), user=name, created_at=_now()))
        return token

    def user_for_token(self, token: str | None) -> User | None:
        if not token:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(users_table).join(tokens_table, tokens_table.c.user == users_table.c.name)
                .where(tokens_table.c.token_sha256 == _sha(token), users_table.c.disabled.is_(False))).first()
        return _user(row) if row else None

    # ---------------------------------------------------------------- saved searches

    def save_search(self, user: User, name: str, query: str) -> None:
        name = name.strip()
        if not name:
            raise UserError("保存する検索に名前を付けてください。")
        with self.engine.begin() as conn:
            conn.execute(insert(saved_table).values(user=user.name, name=name[:200], query=query[:2000],
                                                    created_at=_now()))

    def saved_searches(self, user: User) -> list[SavedSearch]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(saved_table).where(saved_table.c.user == user.name)
                                .order_by(saved_table.c.name, saved_table.c.id))
            return [SavedSearch(r.id, r.name, r.query, r.created_at) for r in rows]

    def delete_search(self, user: User, search_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(saved_table).where(saved_table.c.id == search_id, saved_table.c.user == user.name))

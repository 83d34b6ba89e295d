"""Rows of a plausible Plik deployment, drawn from one seeded generator.

Values have the shapes plikd gives them (ids from its 62-letter alphabet,
gouuid tokens, provider:login user ids, md5(base64(login:password)) upload
passwords). Uploads come in creation order so that the daily statistics can
be written as each day closes and memory stays flat whatever the file count.

Instants are integer nanoseconds until a row is built; then ``clock.local``
(instants plikd stamps in its local zone) or ``clock.utc`` (day boundaries
plikd computes in UTC) turns them into what the driver stores.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import math
import random
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pmigrate.fake import names
from pmigrate.fake.tables import DOWNLOAD_STATS_DAILY, MIGRATIONS, UPLOAD_STATS_DAILY, USAGE_COUNTERS, USAGE_FLAGS, Table

ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits  # plikd's randRunes
BCRYPT_ALPHABET = "./" + string.ascii_uppercase + string.ascii_lowercase + string.digits
# Byte -> id letter; the first 248 byte values map evenly, the rest are skipped.
_ID_TABLE = bytes(ord(ALPHABET[i % 62]) for i in range(256))
_ID_SKIP = bytes(range(248, 256))

NS = 1_000_000_000
DAY_NS = 86_400 * NS
# A fixed "now" keeps a seed's rows identical from one day to the next.
NOW_NS = 1_782_864_000 * NS  # 2026-07-01 00:00:00 UTC
HISTORY_NS = 365 * DAY_NS

STATUSES = ("uploaded", "removed", "deleted", "missing", "uploading")
HAS_BLOB = frozenset(("uploaded", "removed"))
EVER_STORED = frozenset(("uploaded", "removed", "deleted"))

KIB = 1024
MIB = 1024 * KIB


class BlobSink(Protocol):
    def put(self, *, file_id: str, upload_id: str, size: int, legacy: bool, offset: int) -> str:
        """Store (or pretend to store) a blob; return its hex MD5."""


@dataclass(frozen=True)
class Clock:
    """How instants become column values on the target driver."""

    local: Callable[[int], Any]
    utc: Callable[[int], Any]


@dataclass(frozen=True, kw_only=True)
class Shape:
    """How big the deployment is and what its blobs look like."""

    users: int
    uploads: int
    files: int
    anon_uploads: int  # uploads without a user
    sizes: str = "mixed"  # small | mixed | large
    legacy_fraction: float = 0.05  # blobs in plik's pre-1.3 layout
    soft_deleted_fraction: float = 0.05


@dataclass(frozen=True, kw_only=True)
class Part:
    """A slice of the uploads, over whole days, that one process can generate alone.

    Parts never share a day, so each part's upload_stats_daily rows are
    complete; every count is split exactly, so the totals match the Shape.
    """

    index: int
    first_ns: int
    span_ns: int
    uploads: int
    files: int
    anon_uploads: int
    soft_deleted: int


FILES_PER_PART = 100_000


def plan_parts(shape: Shape, *, parts: int | None = None) -> list[Part]:
    """Parts depend on the shape only (never on the machine), so a seed gives the same rows anywhere."""
    wanted = parts if parts else shape.files // FILES_PER_PART
    n = max(1, min(wanted, 365, max(shape.uploads, 1)))
    days = HISTORY_NS // DAY_NS
    first = NOW_NS - HISTORY_NS

    def split(total: int, k: int) -> int:
        return total * (k + 1) // n - total * k // n

    parts = []
    for k in range(n):
        start, end = days * k // n, days * (k + 1) // n
        parts.append(Part(index=k, first_ns=first + start * DAY_NS, span_ns=(end - start) * DAY_NS,
                          uploads=split(shape.uploads, k), files=split(shape.files, k),
                          anon_uploads=split(shape.anon_uploads, k), soft_deleted=split(soft_deleted_count(shape), k)))
    return parts


class Weighted:
    """rng.choices without rebuilding the cumulative weights on every call."""

    def __init__(self, items: Sequence, weights: Sequence[float]) -> None:
        self.items = tuple(items)
        self.cum = list(itertools.accumulate(weights))
        self.total = self.cum[-1]

    def pick(self, rng: random.Random):
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.total)]


TTL = Weighted((0, 3600, 86_400, 7 * 86_400, 30 * 86_400, 365 * 86_400), (10, 5, 15, 20, 40, 10))
STATUS = Weighted(STATUSES, (85, 4, 5, 3, 3))
TOKENS_PER_USER = Weighted((0, 1, 2, 3), (50, 30, 15, 5))
PROVIDER = Weighted(("local", "google", "ovh"), (3, 5, 2))


class Ids:
    """Plik ids (16 of [a-zA-Z0-9]) from the seeded generator, many per call into it."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.buf = ""
        self.pos = 0

    def take(self, length: int = 16) -> str:
        if self.pos + length > len(self.buf):
            raw = self.rng.randbytes(65_536)
            usable = raw.translate(None, _ID_SKIP)  # 248 byte values left: 4 per letter, no bias
            self.buf = self.buf[self.pos:] + usable.translate(_ID_TABLE).decode("ascii")
            self.pos = 0
        out = self.buf[self.pos:self.pos + length]
        self.pos += length
        return out


def gouuid_v4(rng: random.Random) -> str:
    """A token as github.com/nu7hatch/gouuid's NewV4 prints it (its variant bits included)."""
    b = bytearray(rng.randbytes(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] | 0x40) & 0x7F
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def upload_password(login: str, password: str) -> str:
    """What plikd stores for a password-protected upload: md5 of the basic-auth value."""
    basic = base64.b64encode(f"{login}:{password}".encode()).decode()
    return hashlib.md5(basic.encode()).hexdigest()


def size_sampler(kind: str, rng: random.Random) -> Callable[[], int]:
    """small: ~4 KiB; mixed: a long tail from 0 B to tens of MiB; large: a few big files."""
    r = rng.random
    if kind == "small":
        def small() -> int:
            return 0 if r() < 0.03 else 1 + int(r() * 8 * KIB)
        return small
    if kind == "mixed":
        mu = math.log(8 * KIB)
        gauss = rng.gauss

        def mixed() -> int:
            x = r()
            if x < 0.03:
                return 0
            if x < 0.035:
                return 10 * MIB + int(r() * 30 * MIB)
            return min(int(math.exp(mu + 2.2 * gauss())), 40 * MIB)
        return mixed
    if kind == "large":
        lo, hi = math.log(4 * MIB), math.log(128 * MIB)

        def large() -> int:
            return 0 if r() < 0.03 else int(math.exp(lo + (hi - lo) * r()))
        return large
    raise ValueError(f"unknown size distribution {kind!r}")


class Selector:
    """Pick exactly k of n items, in one pass (selection sampling)."""

    def __init__(self, rng: random.Random, *, k: int, n: int) -> None:
        self.rng, self.left, self.seen_left = rng, k, n

    def take(self) -> bool:
        chosen = self.rng.random() * self.seen_left < self.left
        self.seen_left -= 1
        if chosen:
            self.left -= 1
        return chosen


@dataclass
class User:
    id: str
    created_ns: int
    tokens: list[str] = field(default_factory=list)


_SIZE_LIMITS = (MIB, 10 * MIB, 100 * MIB, 1024 * MIB, 10 * 1024 * MIB, 100 * 1024 * MIB)
_SIZE_BUCKETS = tuple(f"file_size_{n}_files" for n in ("lt1m", "1m10m", "10m100m", "100m1g", "1g10g", "10g100g", "gt100g"))


def size_bucket(size: int) -> str:
    return _SIZE_BUCKETS[bisect.bisect_right(_SIZE_LIMITS, size)]


def ttl_flag(ttl: int) -> str:
    if ttl <= 0:
        return "ttl_none_uploads"
    for limit, name in ((3600, "lt1h"), (86_400, "1h1d"), (7 * 86_400, "1d7d"), (30 * 86_400, "7d30d")):
        if ttl < limit:
            return f"ttl_{name}_uploads"
    return "ttl_gt30d_uploads"


_AT = {c: i for i, c in enumerate(USAGE_COUNTERS)}
LIFETIME = {k: _AT[f"lifetime_{k}"] for k in USAGE_FLAGS}
CURRENT = {k: _AT[f"current_{k}"] for k in USAGE_FLAGS}
_LU, _LF, _LS = _AT["lifetime_uploads"], _AT["lifetime_files"], _AT["lifetime_size"]
_CU, _CF, _CS = _AT["current_uploads"], _AT["current_files"], _AT["current_size"]
_UB, _DL, _DB = _AT["uploaded_bytes"], _AT["downloads"], _AT["downloaded_bytes"]


class Usage:
    """usage_stats counters per (user_id, token): current_* for live uploads, lifetime_* for all.

    Each key holds a list: the counters in USAGE_COUNTERS order, then
    last_upload_at, started_at, created_at, updated_at (nanoseconds).
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list] = {}

    def open(self, key: tuple[str, str], created_ns: int) -> list:
        row = [0] * len(USAGE_COUNTERS) + [None, created_ns, created_ns + 91_834, created_ns + 91_834]
        self.rows[key] = row
        return row

    def add_upload(self, keys: list[tuple[str, str]], *, live: bool, flags: list[str], sizes_now: list[int],
                   sizes_ever: list[int], created_ns: int, downloads: int, downloaded_bytes: int) -> None:
        ever = [LIFETIME[f] for f in flags] + [LIFETIME[size_bucket(s)] for s in sizes_ever]
        now = [CURRENT[f] for f in flags] + [CURRENT[size_bucket(s)] for s in sizes_now] if live else []
        stored = sum(sizes_ever)
        for key in keys:
            row = self.rows.get(key) or self.open(key, 0)
            row[_LU] += 1
            row[_LF] += len(sizes_ever)
            row[_LS] += stored
            for i in ever:
                row[i] += 1
            if live:
                row[_CU] += 1
                row[_CF] += len(sizes_now)
                row[_CS] += sum(sizes_now)
                for i in now:
                    row[i] += 1
            row[_UB] += stored
            row[_DL] += downloads
            row[_DB] += downloaded_bytes
            row[-4] = created_ns
            row[-1] = created_ns + 153_207

    def merge(self, other: Usage) -> None:
        """Add the counters another part gathered."""
        n = len(USAGE_COUNTERS)
        for key, theirs in other.rows.items():
            mine = self.rows.get(key) or self.open(key, theirs[-3])
            for i in range(n):
                mine[i] += theirs[i]
            if theirs[-4] is not None and (mine[-4] is None or theirs[-4] > mine[-4]):
                mine[-4] = theirs[-4]
                mine[-1] = max(mine[-1], theirs[-1])

    def table_rows(self, clock: Clock) -> Iterator[tuple]:
        local = clock.local
        for (user_id, token), row in self.rows.items():
            *counters, last, started, created, updated = row
            yield (user_id, token, *counters, None if last is None else local(last), local(started), local(created),
                   local(updated))


class Generator:
    """Yields each table's rows; call the methods in foreign-key order."""

    def __init__(self, *, seed: int | str, shape: Shape, blobs: BlobSink | None, clock: Clock,
                 users: list[User] | None = None) -> None:
        self.rng = random.Random(seed)
        self.ids = Ids(self.rng)
        self.shape = shape
        self.blobs = blobs
        self.clock = clock
        self.size = size_sampler(shape.sizes, self.rng)
        self.users: list[User] = users if users is not None else []
        self.usage = Usage()
        self.first_ns = NOW_NS - HISTORY_NS
        self.bytes_stored = 0
        self.blob_count = 0
        self.open_day = -1
        self.daily_uploads: dict[tuple[int, str, str], list[int]] = {}
        self.file_names = names.all_file_names()
        self.long_comments = [long_comment(self.rng) for _ in range(64)]

    # -- users and tokens -------------------------------------------------

    def users_rows(self) -> Iterator[tuple]:
        rng, local = self.rng, self.clock.local
        self.usage.open(("__anonymous__", ""), self.first_ns - 400 * DAY_NS)
        self.usage.open(("__deleted__", ""), self.first_ns - 400 * DAY_NS + 370_408)
        for i in range(self.shape.users):
            created = self.first_ns - int(rng.random() * 400 * DAY_NS)
            if i == 0:
                row = ("local:admin", "local", "admin", bcrypt_like(rng), "Plik Admin", "admin@plik.example", "", "", "",
                       True, 100_000_000_000, 100_000_000_000, 31_536_000, local(created))
            else:
                row = self._user(i, local(created))
            self.users.append(User(row[0], created))
            self.usage.open((row[0], ""), created)[_AT["lifetime_users"]] = 1
            yield row

    def _user(self, i: int, created: Any) -> tuple:
        rng = self.rng
        display, login = rng.choice(names.PEOPLE)
        provider = PROVIDER.pick(rng)
        email = f"{login}{i}@{rng.choice(names.MAIL_DOMAINS)}"
        if provider == "local":
            login, password = f"{login}{i}", bcrypt_like(rng)
        elif provider == "google":
            login, password = email, ""
        else:
            login, password = f"{login[:2]}{i}{rng.randrange(100, 999)}-ovh", ""
        limited = rng.random() < 0.1
        return (
            f"{provider}:{login}",
            provider,
            login,
            password,
            display,
            email,
            f"https://pictures.example/{self.ids.take(12)}.png" if rng.random() < 0.2 else "",
            rng.choice(("", "", "dark", "light")),
            rng.choice(("", "", "en", "fr", "ko", "ar", "hi")),
            False,
            rng.choice((10 * MIB, 1024 * MIB)) if limited else 0,
            rng.choice((1024 * MIB, 10 * 1024 * MIB)) if limited else 0,
            rng.choice((86_400, 30 * 86_400)) if limited else 0,
            created,
        )

    def tokens_rows(self) -> Iterator[tuple]:
        rng = self.rng
        for user in self.users:
            for _ in range(TOKENS_PER_USER.pick(rng)):
                token = gouuid_v4(rng)
                created = user.created_ns + int(rng.random() * 30 * DAY_NS)
                user.tokens.append(token)
                self.usage.open((user.id, token), created)
                yield (token, rng.choice(names.TOKEN_COMMENTS), user.id, self.clock.local(created))

    # -- uploads and files ------------------------------------------------

    def uploads_and_files(self, part: Part) -> Iterator[tuple[tuple, list[tuple], list[tuple[Table, tuple]]]]:
        """(upload row, its file rows, statistics rows now complete) of one part, oldest upload first.

        Call closed_days() once after the last one for the part's last day.
        """
        rng = self.rng
        anon = Selector(rng, k=part.anon_uploads, n=part.uploads)
        soft = Selector(rng, k=part.soft_deleted, n=part.uploads)
        step = part.span_ns // max(part.uploads, 1)
        files_left = part.files
        pending_statuses = list(STATUSES) if part.index == 0 else []  # every status shows up early on
        for i in range(part.uploads):
            n_files = file_count(rng, files_left=files_left, uploads_left=part.uploads - i)
            files_left -= n_files
            created = part.first_ns + i * step + int(rng.random() * step)
            is_anon = anon.take() or not self.users
            deleted = soft.take()
            yield self._upload(created=created, n_files=n_files, is_anon=is_anon, deleted=deleted,
                               pending_statuses=pending_statuses)

    def _upload(self, *, created: int, n_files: int, is_anon: bool, deleted: bool,
                pending_statuses: list[str]) -> tuple[tuple, list[tuple], list[tuple[Table, tuple]]]:
        rng, r, local = self.rng, self.rng.random, self.clock.local
        upload_id = self.ids.take()
        ttl = TTL.pick(rng)
        stream = r() < 0.02
        e2ee = "age" if r() < 0.05 else ""
        user_id = token = ""
        if not is_anon:
            user = self.users[int(len(self.users) * r() ** 2)]  # a few heavy users
            user_id = user.id
            if user.tokens and r() < 0.4:
                token = rng.choice(user.tokens)
        login = password = ""
        protected = r() < 0.07
        if protected:
            login = rng.choice(("plik", "plik", "team", "client", "équipe"))
            password = upload_password(login, self.ids.take(10))
        x = r()
        comments = "" if x < 0.7 else (rng.choice(names.COMMENTS) if x < 0.9 else rng.choice(self.long_comments))
        extend_ttl, one_shot, removable = r() < 0.1, r() < 0.08, r() < 0.15

        files: list[tuple] = []
        sizes_now: list[int] = []
        sizes_ever: list[int] = []
        at = created
        for ref in range(n_files):
            at += 1_000_000 + int(r() * 900_000_000)
            if deleted:
                status = "removed" if r() < 0.5 else "deleted"
            elif stream:
                status = ("missing", "uploading", "deleted")[int(r() * 3)]
            elif pending_statuses:
                status = pending_statuses.pop(0)
            else:
                status = STATUS.pick(rng)
            row = self._file(upload_id=upload_id, ref=ref, status=status, created=at, e2ee=bool(e2ee))
            files.append(row)
            if status in EVER_STORED:
                sizes_ever.append(row[6])
                if status == "uploaded":
                    sizes_now.append(row[6])

        stored = sum(sizes_ever)
        downloads = 0 if r() < 0.6 else int(rng.expovariate(0.25)) + 1
        last_dl = at + int(r() * DAY_NS) if downloads else None
        deleted_at = created + 1 + int(r() * 30 * DAY_NS) if deleted else None
        upload = (
            upload_id,
            ttl,
            extend_ttl,
            remote_ip(rng),
            comments,
            e2ee,
            self.ids.take(32),
            user_id,
            token,
            stream,
            one_shot,
            removable,
            protected,
            login,
            password,
            downloads,
            None if last_dl is None else local(last_dl),
            downloads * stored,
            local(created),
            None if deleted_at is None else local(deleted_at),
            local(created + ttl * NS) if ttl else None,
        )
        flags = [ttl_flag(ttl)]
        for on, name in ((protected, "password_uploads"), (removable, "removable_uploads"),
                         (one_shot, "one_shot_uploads"), (stream, "stream_uploads"),
                         (extend_ttl, "extend_ttl_uploads"), (e2ee, "e2ee_uploads"),
                         (comments, "comment_uploads")):
            if on:
                flags.append(name)
        keys = [("__anonymous__", "")] if is_anon else [(user_id, "")] + ([(user_id, token)] if token else [])
        self.usage.add_upload(keys, live=not deleted, flags=flags, sizes_now=sizes_now, sizes_ever=sizes_ever,
                              created_ns=created, downloads=downloads, downloaded_bytes=downloads * stored)
        return upload, files, self._daily(upload_id=upload_id, user_id=user_id, token=token, created=created,
                                          stored=stored, downloads=downloads, last_dl=last_dl)

    def _file(self, *, upload_id: str, ref: int, status: str, created: int, e2ee: bool) -> tuple:
        rng, r, local = self.rng, self.rng.random, self.clock.local
        file_id = self.ids.take()
        name, ctype = self.file_names[int(r() * len(self.file_names))]
        if e2ee:
            name, ctype = name + ".age", "application/octet-stream"
        size = self.size()
        offset = rng.getrandbits(32)
        legacy = r() < self.shape.legacy_fraction
        if status in HAS_BLOB:
            md5 = self.blobs.put(file_id=file_id, upload_id=upload_id, size=size, legacy=legacy, offset=offset)
            self.bytes_stored += size
            self.blob_count += 1
        elif status == "deleted":
            md5 = f"{rng.getrandbits(128):032x}"  # its blob is gone: nothing to hash
        else:  # missing or uploading: nothing received yet
            md5, size = "", 0
            if status == "missing" and r() < 0.5:
                ctype = ""
        downloads = 0 if status in ("missing", "uploading") or r() < 0.6 else 1 + int(r() * 12)
        return (
            file_id,
            upload_id,
            name,
            status,
            md5,
            ctype,
            size,
            ctype.startswith("text/") or ctype == "application/json",
            str(ref) if r() < 0.7 else "",
            "",  # the file backend keeps nothing there
            downloads,
            local(created + 1 + int(r() * 5 * DAY_NS)) if downloads else None,
            local(created),
        )

    def _daily(self, *, upload_id: str, user_id: str, token: str, created: int, stored: int, downloads: int,
               last_dl: int | None) -> list[tuple[Table, tuple]]:
        """Statistics rows: one download row per downloaded upload; upload rows once their day is over."""
        out: list[tuple[Table, tuple]] = []
        day = created - created % DAY_NS
        if day != self.open_day:
            out.extend(self.closed_days())
            self.open_day = day
        for key in {(day, user_id, ""), (day, user_id, token)}:
            entry = self.daily_uploads.setdefault(key, [0, 0, 0])
            entry[0] += 1
            entry[1] += stored
            entry[2] = created + 108_336
        if downloads:
            out.append((DOWNLOAD_STATS_DAILY, (self.clock.utc(last_dl - last_dl % DAY_NS), "upload", upload_id,
                                               downloads, downloads * stored, user_id, token,
                                               self.clock.local(last_dl + 95_113))))
        return out

    def closed_days(self) -> list[tuple[Table, tuple]]:
        """upload_stats_daily rows held so far; call once more after the last upload."""
        utc, local = self.clock.utc, self.clock.local
        rows = [(UPLOAD_STATS_DAILY, (utc(d), u, t, n, b, local(at))) for (d, u, t), (n, b, at) in self.daily_uploads.items()]
        self.daily_uploads.clear()
        return rows

    # -- settings, statistics, migrations ----------------------------------

    def settings_rows(self) -> Iterator[tuple]:
        yield ("authentication_signature_key", self.ids.take(64))

    def usage_rows(self) -> Iterator[tuple]:
        return self.usage.table_rows(self.clock)

    def migrations_rows(self) -> Iterator[tuple]:
        return ((m,) for m in MIGRATIONS)


def soft_deleted_count(shape: Shape) -> int:
    if shape.uploads < 2:
        return 0
    return max(1, round(shape.uploads * shape.soft_deleted_fraction))


def file_count(rng: random.Random, *, files_left: int, uploads_left: int) -> int:
    """Mostly one or a few files per upload, some with many; totals come out exact."""
    if uploads_left <= 1:
        return files_left
    mean = files_left / uploads_left
    if mean <= 1:
        return 1 if rng.random() < mean else 0
    return min(files_left, 1 + int(rng.expovariate(1 / (mean - 1))))


def bcrypt_like(rng: random.Random) -> str:
    """Shaped like plikd's bcrypt hash of a local user's password (cost 14)."""
    return "$2a$14$" + "".join(rng.choices(BCRYPT_ALPHABET, k=53))




def remote_ip(rng: random.Random) -> str:
    x = rng.random()
    if x < 0.8:
        b = rng.getrandbits(32)
        return f"{1 + (b >> 24) % 223}.{(b >> 16) & 255}.{(b >> 8) & 255}.{1 + (b & 255) % 254}"
    if x < 0.95:
        return "2001:db8:" + ":".join(f"{rng.getrandbits(16):x}" for _ in range(6))
    return ""


def long_comment(rng: random.Random) -> str:
    """Words in several scripts, under 256 characters: mysql keeps comments in a varchar(256)."""
    text = ""
    limit = rng.randint(150, 255)
    while True:
        word = rng.choice(names.WORDS)
        if len(text) + len(word) + 1 > limit:
            return text
        text = f"{text} {word}" if text else word

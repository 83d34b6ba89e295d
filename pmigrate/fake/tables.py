"""Columns of Plik's tables at schema 0011-stats, in the order fakedb fills them.

Inserts name every column, so a driver's own column order does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass

from pmigrate.metadata.schema import MIGRATION_IDS

# The migrations rows plikd writes, gormigrate's marker first.
MIGRATIONS = ("SCHEMA_INIT", *MIGRATION_IDS)

SCHEMA_LEVEL = MIGRATIONS[-1]

# usage_stats counters, by the suffix after current_/lifetime_ where both exist.
USAGE_PAIRED = (
    "uploads",
    "files",
    "size",
)
USAGE_FLAGS = (
    "password_uploads",
    "removable_uploads",
    "one_shot_uploads",
    "stream_uploads",
    "extend_ttl_uploads",
    "e2ee_uploads",
    "comment_uploads",
    "ttl_none_uploads",
    "ttl_lt1h_uploads",
    "ttl_1h1d_uploads",
    "ttl_1d7d_uploads",
    "ttl_7d30d_uploads",
    "ttl_gt30d_uploads",
    "file_size_lt1m_files",
    "file_size_1m10m_files",
    "file_size_10m100m_files",
    "file_size_100m1g_files",
    "file_size_1g10g_files",
    "file_size_10g100g_files",
    "file_size_gt100g_files",
)
USAGE_COUNTERS = (
    *(f"current_{k}" for k in USAGE_PAIRED),
    *(f"lifetime_{k}" for k in USAGE_PAIRED),
    "downloads",
    "downloaded_bytes",
    "uploaded_bytes",
    "lifetime_users",
    *(f"{when}_{k}" for k in USAGE_FLAGS for when in ("current", "lifetime")),
)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]


USERS = Table(
    "users",
    ("id", "provider", "login", "password", "name", "email", "profile_picture", "theme", "language",
     "is_admin", "max_file_size", "max_user_size", "max_ttl", "created_at")
)
TOKENS = Table("tokens", ("token", "comment", "user_id", "created_at"))
UPLOADS = Table(
    "uploads",
    ("id", "ttl", "extend_ttl", "remote_ip", "comments", "e2ee", "upload_token", "user", "token", "stream",
     "one_shot", "removable", "protected_by_password", "login", "password", "download_count",
     "last_downloaded_at", "downloaded_bytes", "created_at", "deleted_at", "expire_at")
)
FILES = Table(
    "files",
    ("id", "upload_id", "name", "status", "md5", "type", "size", "is_text", "reference", "backend_details",
     "download_count", "last_downloaded_at", "created_at")
)
SETTINGS = Table("settings", ("key", "value"))
USAGE_STATS = Table(
    "usage_stats",
    ("user_id", "token", *USAGE_COUNTERS, "last_upload_at", "started_at", "created_at", "updated_at")
)
DOWNLOAD_STATS_DAILY = Table(
    "download_stats_daily",
    ("day", "entity_type", "entity_id", "downloads", "bytes", "user_id", "token", "updated_at")
)
UPLOAD_STATS_DAILY = Table(
    "upload_stats_daily",
    ("day", "user_id", "token", "uploads", "bytes", "updated_at")
)
MIGRATIONS_TABLE = Table("migrations", ("id",))

# Foreign-key order: parents first.
ALL = (USERS, TOKENS, UPLOADS, FILES, SETTINGS, USAGE_STATS, DOWNLOAD_STATS_DAILY, UPLOAD_STATS_DAILY, MIGRATIONS_TABLE)

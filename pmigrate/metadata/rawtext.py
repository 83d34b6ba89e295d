"""Text a sqlite3 database holds that is not valid UTF-8.

plikd stores Go strings, which are bytes, as they are: a file name sent in
Latin-1 lands in sqlite3 as text that Python's sqlite3 refuses to decode,
and that error names neither table nor row. Connections pmigrate opens on
sqlite3 decode text with decode() below instead: valid text is a str as
before, anything else a RawText holding the exact bytes, so that the copier
can name the row (postgres and mysql store text as UTF-8 only) or write the
same bytes back into another sqlite3 database.
"""

from __future__ import annotations

from typing import Any


class RawText(bytes):
    """The bytes of a text value that is not valid UTF-8."""

    __slots__ = ()

    def __str__(self) -> str:
        return self.decode("utf-8", "backslashreplace")

    def __repr__(self) -> str:
        return "'" + str(self).replace("'", "\\'") + "'"  # 'A\xffB': the bytes that do not decode as escapes


def decode(value: bytes) -> str | RawText:
    """A sqlite3 text_factory that never fails."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return RawText(value)


def as_str(value: Any) -> Any:
    """A str for places that need one (a content type, a checksum): bad bytes become U+FFFD."""
    return value.decode("utf-8", "replace") if value.__class__ is RawText else value


def undecodable(exc: BaseException) -> bool:
    """sqlite3's error for text it could not decode with the default text_factory."""
    return "Could not decode to UTF-8" in str(exc)

"""Plik ids become paths and object keys: check them before they do."""

import re

from pmigrate.errors import InvalidId
from pmigrate.quote import shown

ID_PATTERN = re.compile(r"[A-Za-z0-9]{16}")


def check_id(value: object, *, what: str = "id") -> str:
    """Return ``value`` if it is a Plik id (16 of [A-Za-z0-9]), else raise InvalidId.

    The error's item is the whole value (the JSON report escapes it); its
    message shows it quoted and shortened.
    """
    if isinstance(value, str) and ID_PATTERN.fullmatch(value):
        return value
    raise InvalidId(f"refusing {what} {shown(value)}: Plik ids are 16 characters of [A-Za-z0-9]", item=str(value))

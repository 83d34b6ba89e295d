"""The options of 'pmigrate fakedb', apart from its machinery.

The parser of every pmigrate command lists fakedb's options; importing
pmigrate.fakedb for them would load SQLAlchemy (about 0.13 s) before a
migration even starts. This module imports nothing heavy.
"""

from __future__ import annotations

import argparse

from pmigrate.options import whole_number

SIZES = ("small", "mixed", "large")


def _count(text: str) -> int:
    return whole_number(text, least=0)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _fraction_or_count(text: str) -> float | int:
    """'0.3' is a fraction of the uploads, '25' a number of uploads."""
    if any(c in text for c in ".eE"):
        return _fraction(text)
    return _count(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="DIR", help="folder to create the deployment in (must be empty or absent)")
    p.add_argument("--users", type=_count, default=None, metavar="N",
                   help="users, the first being local:admin (default: uploads/10, at most 10000)")
    p.add_argument("--uploads", type=_count, default=None, metavar="N", help="uploads (default: files/3)")
    p.add_argument("--files", type=_count, default=1000, metavar="N",
                   help="file rows, in every status; only uploaded and removed ones have a blob (default: %(default)s)")
    p.add_argument("--anon-uploads", type=_fraction_or_count, default=0.3, metavar="F|N",
                   help="uploads without a user: a fraction such as 0.3, or a count such as 25 (default: %(default)s)")
    p.add_argument("--sizes", choices=SIZES, default="mixed",
                   help="blob sizes: small (~4 KiB), mixed (0 B to tens of MiB, long tail), large (4 to 128 MiB) "
                   "(default: %(default)s)")
    p.add_argument("--legacy-fraction", type=_fraction, default=0.05, metavar="F",
                   help="fraction of blobs stored in plik's pre-1.3 layout Directory/UU/UPLOADID/FILEID "
                   "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same rows and bytes (default: %(default)s)")
    p.add_argument("--metadata-only", action="store_true",
                   help="write no blobs; sizes and md5 are still filled (default: off)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--metadata-config", metavar="CFG", default=None,
                        help="write the metadata into the database named by MetadataBackendConfig of this plikd.cfg "
                        "(it must hold no Plik tables) (default: SQLite DIR/plik.db)")
    target.add_argument("--metadata-url", metavar="URL", default=None,
                        help="write the metadata into this SQLAlchemy URL, e.g. postgresql://u:p@host/db or "
                        "mysql://u:p@host/db (it must hold no Plik tables) (default: SQLite DIR/plik.db)")
    p.add_argument("--parts", type=_count, default=None, metavar="N",
                   help="split the uploads into N parts over whole days; the rows depend on the seed and N "
                   "(default: one part per 100000 files)")
    p.add_argument("--jobs", type=_count, default=1, metavar="N",
                   help="worker processes making the parts; the rows do not depend on it. More than 1 pays on "
                   "idle CPUs only: SQLite parts are then copied in at the end (default: %(default)s)")
    p.add_argument("--batch-size", type=_count, default=20_000, metavar="N",
                   help="rows per insert batch and transaction (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, one summary line (default: off)")

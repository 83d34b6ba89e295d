"""The verify stage: prove that the target holds every row and every blob of the source.

The stage itself is stage.py; rows.py compares the rows, blobs.py and
blobjob.py the blobs, unowned.py lists what no file row claims.
"""

from pmigrate.verify.stage import VerifyPlan, check_migrated, preflight, run

__all__ = ["VerifyPlan", "check_migrated", "preflight", "run"]

"""What a run did: per-area figures, problems, the summary and the JSON report.

Only the parent process writes it. Everything that leaves through here is
redacted; every printed line is also made printable and bounded (quote.py),
while the JSON keeps full values, escaped as JSON escapes them.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pmigrate import __version__
from pmigrate.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from pmigrate.quote import line, shown
from pmigrate.redact import redact, redact_mapping

# Problems listed in full in the JSON report; past this they are only counted.
MAX_LISTED_PROBLEMS = 100_000


@dataclass(frozen=True, slots=True)
class Problem:
    area: str  # metadata | data | verify-rows | verify-blobs | ...
    kind: str  # missing, size-mismatch, hash-mismatch, corrupt-source, error, orphan, ...
    item: str  # table:key, file id, object key
    message: str
    fatal: bool = True  # counts against the exit code (False: reported only, e.g. skipped orphans)


@dataclass
class Report:
    command: str
    started: float = field(default_factory=time.time)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: list[tuple[str, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    problem_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    failed: bool = False
    interrupted: bool = False  # Ctrl-C, SIGTERM or SIGHUP: the run stopped before its end
    interrupted_code: int = EXIT_INTERRUPTED  # 128 + the number of the signal that stopped it

    def section(self, area: str) -> dict[str, Any]:
        """The JSON-able figures of one area, created on first use."""
        return self.sections.setdefault(area, {})

    def line(self, area: str, text: str) -> None:
        """One line of the human summary for an area."""
        self.lines.append((area, text))

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def problem(self, *, area: str, kind: str, item: str, message: str, fatal: bool = True) -> None:
        key = f"{area}:{kind}"
        self.problem_counts[key] = self.problem_counts.get(key, 0) + 1
        if fatal:
            self.failed = True
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(Problem(area=area, kind=kind, item=item, message=message, fatal=fatal))

    def fail(self) -> None:
        """Mark the run failed without a per-item problem (e.g. counts differ)."""
        self.failed = True

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return self.interrupted_code
        return EXIT_FAILED if self.failed else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        data = {
            "pmigrate": __version__,
            "command": self.command,
            "started": self.started,
            "seconds": round(time.time() - self.started, 3),
            "ok": not self.failed and not self.interrupted,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "sections": self.sections,
            "warnings": self.warnings,
            "problem_counts": self.problem_counts,
            "problems": [asdict(p) for p in self.problems],
        }
        return redact_mapping(data)  # type: ignore[return-value]

    def write_json(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".partial")
        text = json.dumps(self.to_dict(), indent=2, default=str, ensure_ascii=False) + "\n"
        # A name that was not UTF-8 holds lone surrogates: written as JSON's \udcXX escapes.
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
        tmp.replace(path)

    def print_summary(self, out: TextIO = sys.stdout, *, max_problems: int = 20) -> None:
        for text in self.warnings:
            print(line(redact(f"pmigrate: warning: {text}")), file=out)
        area = None
        for a, text in self.lines:
            if a != area:
                print(f"{a}:", file=out)
                area = a
            print(line(redact(f"  {text}")), file=out)
        if self.problems:
            listed = [p for p in self.problems if p.fatal][:max_problems] or self.problems[:max_problems]
            total = sum(self.problem_counts.values())
            print(f"problems ({total}):", file=out)
            for p in listed:
                print(line(redact(f"  ! [{p.area}] {p.kind} {shown(p.item)}: {p.message}")), file=out)
            if total > len(listed):
                print(f"  ... {total - len(listed)} more (see --json)", file=out)
        verdict = "INTERRUPTED (run the same command again to resume)" if self.interrupted else "FAILED" if self.failed else "OK"
        print(f"{self.command}: {verdict} in {time.time() - self.started:.1f}s", file=out)

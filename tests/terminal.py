"""A real pseudo-terminal for the CLI, and what a terminal shows of its output.

run_in_pty() starts a command with stdin, stdout and stderr on a pty of the
given size, as in tmux or an xterm, and returns the raw bytes it wrote.
Screen replays them the way a VT100-style terminal does, including the
pending wrap of xterm and tmux: after a character in the last column the
cursor stays there, and the next character goes to the next line unless a
carriage return or a cursor movement comes first. A cursor moved up from
that state stays in the last column, which is how a line of the summary
came to start there. An escape sequence Screen does not know fails the test
rather than being skipped.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

_CSI = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def run_in_pty(argv: list[str], *, cols: int, rows: int = 40, env: dict | None = None, cwd=None, timeout: float = 300) -> tuple[int, str]:
    """(exit status, everything written to the terminal), the command alone on a pty of cols x rows."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last holder of the pty's other end is gone
                break
            if not chunk:
                break
            out += chunk
        else:
            proc.kill()
            raise TimeoutError(f"{argv} did not end in {timeout}s")
        return proc.wait(timeout=30), out.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


class Screen:
    """The lines a terminal of `cols` columns shows after `text`, scrolled-off lines included."""

    def __init__(self, cols: int) -> None:
        self.cols = cols
        self.lines: list[list[str]] = [[]]
        self.y = 0
        self.x = 0
        self.pending = False  # a character was written in the last column: the next one wraps

    def feed(self, text: str) -> Screen:
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                m = _CSI.match(text, i)
                if m is None:
                    raise ValueError(f"escape sequence not understood at {text[i:i + 12]!r}")
                self._csi(m.group(1), m.group(2))
                i = m.end()
                continue
            if ch == "\r":
                self.x, self.pending = 0, False
            elif ch == "\n":
                self._down()
            elif ch == "\b":
                self.x, self.pending = max(0, self.x - 1), False
            elif ch == "\x07":
                pass
            elif ch.isprintable():
                if self.pending:
                    self.x, self.pending = 0, False
                    self._down()
                row = self.lines[self.y]
                row.extend(" " * (self.x + 1 - len(row)))
                row[self.x] = ch
                if self.x == self.cols - 1:
                    self.pending = True
                else:
                    self.x += 1
            else:
                raise ValueError(f"control character {ch!r} not understood")
            i += 1
        return self

    def _down(self) -> None:
        self.y += 1
        self.pending = False
        while len(self.lines) <= self.y:
            self.lines.append([])

    def _csi(self, param: str, cmd: str) -> None:
        self.pending = False  # any cursor movement ends a pending wrap, the cursor staying where it is
        n = int(param or 1)
        if cmd == "A":
            self.y = max(0, self.y - n)
        elif cmd == "B":
            for _ in range(n):
                self._down()
        elif cmd == "K" and param in ("", "0"):
            del self.lines[self.y][self.x :]
        else:
            raise ValueError(f"escape sequence ESC[{param}{cmd} not understood")

    def text(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.lines]

"""The journal of one sweep: each finished run's row appended as one line until its batch commits.

One ``write`` of one whole line per run, instead of creating, renaming and
deleting a sidecar per run. A line is written whole or the run fails: after a
short or failed write the journal is cut back to its last full line, so a later
line is never glued onto a partial one.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from entropic._storage.codec import encode_line
from entropic._storage.disk import Disk, write_all

__all__ = ["Journal"]

log = logging.getLogger("entropic")


class Journal:
    """The journal of one sweep: finished rows appended until their batch is committed."""

    def __init__(self, disk: Disk, owner: str) -> None:
        self.disk = disk
        self.owner = owner
        self.serial = 0
        self.fd = -1
        self.name = ""
        self.size = 0  # bytes of whole lines written to the current file
        self._warned = False

    def append(self, row: dict[str, Any]) -> bool:
        """Journal one finished run's row; False if its values are not JSON-able.

        Raises OSError (the disk is full, say) if the whole line could not be
        written; the journal then still ends at its last whole line.
        """
        line = encode_line(row)
        if line is None:
            return False
        if self.fd < 0:
            self.name = self.disk.journal_name(self.owner, self.serial)
            self.fd = self.disk.open_journal(self.name)
            self.size = os.fstat(self.fd).st_size
        try:
            write_all(self.fd, line)
        except BaseException:
            self._cut_back()
            raise
        self.size += len(line)
        return True

    def _cut_back(self) -> None:
        """Drop a partial line; if even that fails, leave the file and start a new one."""
        try:
            os.ftruncate(self.fd, self.size)
        except OSError:
            # The partial line stays last in this file, where readers skip it.
            self._close()

    def rotate(self) -> None:
        """Drop the journal of a committed batch; the next run starts a new one."""
        if self.fd < 0:
            return
        name = self.name
        self._close()
        try:
            self.disk.remove_journal(name)
        except OSError as exc:
            # Its rows are committed: a leftover journal only costs the next
            # recovery a look (rows already stored are kept as they are).
            if not self._warned:
                self._warned = True
                log.warning("cannot remove the committed journal %s: %s", name, exc)

    def close(self) -> None:
        """Close without removing (what was not committed stays for recovery)."""
        self._close()

    def _close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            self.serial += 1
            os.close(fd)

"""The metric files of gunicorn's workers, with the files of dead workers folded into one per metric type.

prometheus_client's multiprocess mode keeps one file per metric type and worker process in
PROMETHEUS_MULTIPROC_DIR, and a scrape reads every file. Workers come and go (max_requests, crashes,
timeouts): left alone, the files of dead workers pile up and every scrape reads them all (150 restarts: 322
files, a scrape 5 ms -> 25-29 ms). The master folds a dead worker's counters and histograms into
``<type>_archive.db`` and deletes its files, so the folder holds the live workers' files plus one archive per
type. Scrapes and folds exclude each other with a ``flock`` on ``.fold.lock`` in the folder, so no scrape
counts a value twice nor meets a file deleted under it.

Imported only once PROMETHEUS_MULTIPROC_DIR is set (prometheus_client chooses its storage at import).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

# Types whose samples add up across processes; live gauges are removed by mark_process_dead instead.
ADDITIVE_TYPES = ("counter", "histogram", "summary")
LOCK_NAME = ".fold.lock"


@contextmanager
def _folder_lock(path: str, operation: int) -> Iterator[None]:
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # releases the lock


def fold_dead_worker(path: str, pid: int) -> int:
    """Add the samples of dead worker ``pid`` to the archive files and delete its files; how many went."""
    folded = 0
    with _folder_lock(path, fcntl.LOCK_EX):
        for kind in ADDITIVE_TYPES:
            dead = os.path.join(path, f"{kind}_{pid}.db")
            if not os.path.exists(dead):
                continue
            archive = os.path.join(path, f"{kind}_archive.db")
            totals: dict[str, float] = {}
            for source in (archive, dead):
                if os.path.exists(source):
                    for key, value, _timestamp, _position in MmapedDict.read_all_values_from_file(source):
                        totals[key] = totals.get(key, 0.0) + value
            # Not ending in .db: a scrape never reads a half-written archive.
            temp = archive + ".new"
            with suppress(FileNotFoundError):
                os.unlink(temp)  # left by a master killed mid-fold: MmapedDict would add to it
            merged = MmapedDict(temp)
            try:
                for key, value in totals.items():
                    merged.write_value(key, value, 0.0)
            finally:
                merged.close()
            os.replace(temp, archive)
            os.unlink(dead)
            folded += 1
    return folded


class FoldingCollector(MultiProcessCollector):
    """MultiProcessCollector that reads the folder under the fold lock (shared: scrapes run in parallel)."""

    def collect(self):
        """Every worker's samples, added up, read while no fold is under way."""
        with _folder_lock(self._path, fcntl.LOCK_SH):
            return list(super().collect())

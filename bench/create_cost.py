#!/usr/bin/env python3
"""bench/create_cost.py DIR [N] - microseconds per empty file created in
DIR (a fresh subdirectory, removed afterwards), the cost every stored
message pays at least once.

On ext4 without a journal (this kind of VM's root file system) the inode
allocator skips inodes freed in the last 60 to 360 seconds, looking at
each; after a large delete every file creation in that block group pays
for the scan, up to milliseconds. bench/store_file.sh prints this before
each round so a slow round can be told from a slow store. Not a test.
"""
import os
import sys
import tempfile
import time


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "."
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    work = tempfile.mkdtemp(prefix="create-cost.", dir=base)
    try:
        start = time.perf_counter()
        for i in range(n):
            os.close(os.open(os.path.join(work, str(i)),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        elapsed = time.perf_counter() - start
    finally:
        # Renamed aside, not unlinked here: unlinking is what makes the
        # next creations slow. The caller removes it with the rest.
        os.rename(work, work + ".done")
    print("%.0f" % (elapsed * 1e6 / n))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What `write_bytes` (/proc/PID/io, getrusage's ru_oublock) counts for small synced writes.

Writes N chunks of 8 000 bytes one after another into a file whose first SIZE bytes were written
(in one call) and synced first, each chunk followed by fdatasync, as a log-structured store does.
Prints the bytes written by the calls, the process's write_bytes, and the sectors the block
device wrote meanwhile (/sys/block/DEV/stat: the whole machine, so other writers add to it).

    python3 benches/write_bytes_accounting.py [SIZE] [N] [DEVICE]
    python3 benches/write_bytes_accounting.py 4194304 50 vda

On the development machine's kernel (6.18, ext4) each fdatasync into the pre-written region
adds 2 MiB to write_bytes (a whole large folio per re-dirtied page), while the device writes
about what the calls wrote: README, Performance.
"""
import os
import sys


def write_bytes():
    for line in open("/proc/self/io"):
        if line.startswith("write_bytes"):
            return int(line.split()[1])
    return 0


def sectors(dev):
    try:
        return int(open(f"/sys/block/{dev}/stat").read().split()[6])
    except OSError:
        return 0


size = int(sys.argv[1]) if len(sys.argv) > 1 else 4 * 1024 * 1024
n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
dev = sys.argv[3] if len(sys.argv) > 3 else "vda"
path = "write_bytes_accounting.tmp"
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
try:
    os.pwrite(fd, b"\0" * size, 0)
    os.fsync(fd)
    w0, s0 = write_bytes(), sectors(dev)
    for i in range(n):
        os.pwrite(fd, b"x" * 8000, i * 8000)
        os.fdatasync(fd)
    w1, s1 = write_bytes(), sectors(dev)
finally:
    os.close(fd)
    os.unlink(path)
print(f"written by the calls: {n * 8000} B in {n} pwrite + fdatasync")
print(f"write_bytes:          {w1 - w0} B ({(w1 - w0) / n:.0f} B per fdatasync)")
print(f"device {dev} wrote:    {(s1 - s0) * 512} B (every process on the machine)")

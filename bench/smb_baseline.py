"""Remote SMB baseline: folders/s read over SMB (descriptor + listing) beside smbclient's recursive listing.

Starts a real Samba file server (the integration tests' `SambaFileServer`, Debian smbd on a loopback address),
fills its share with ``--folders`` folders (``--fanout`` per level, a few files in each), then, in the same run:
``smbclient -c 'recurse; ls'`` over the whole share (the baseline: it lists, it reads no descriptor), and
`collectors.smb.tree.walk` reading every folder's security descriptor and subfolders with 1, 8 and 16 folders
in flight, a walk of 8 in flight with each folder's change notification armed first, and the collector's baseline
proper (`ShareLoop` until its first scan is read and every watch re-armed) over 1 and over 2 connections
(``[[smb]] connections``: smbd serves each connection in a process of its own).
Target (issue 17): the baseline at ≥ 0.5× the listing's folders/s; beside it the ratio of CPU a folder (client and
server, smbclient's over ours), which the machine's load blurs less. Beside each rate, the client's CPU per folder
(ours: this process; smbclient's: the child's), which the machine's load inflates less than wall time, and the
server's (every process started with this server's smb.conf: smbd, its notifyd…; for smbclient its connection's
smbd child, counted once reaped), which shows where an
armed baseline's time goes. An armed walk parks each watch as it arms it (`notify.py`: smbd's CPU per folder read
grows with the requests open on the connection); the armed figures include re-arming every watch after the walk.
Needs root (smbd, useradd).

    .venv/bin/python bench/smb_baseline.py [--folders 5000] [--fanout 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.smb.loop import LoopOptions, ShareLoop
from collectors.smb.notify import Watches
from collectors.smb.share import RemoteFolder, SmbShare
from collectors.smb.tree import walk
from tests.integration.servers.samba_fs import ADMIN_USER, SambaFileServer


def fill(root: Path, folders: int, fanout: int) -> int:
    """Breadth-first: level by level, ``fanout`` children each, until ``folders`` exist; 3 empty files each."""
    made, level = 0, [root]
    while made < folders:
        below = []
        for parent in level:
            for number in range(fanout):
                if made >= folders:
                    break
                child = parent / f"mapp-{number:03d}"
                child.mkdir()
                for name in ("a.txt", "b.docx", "c.pdf"):
                    (child / name).write_bytes(b"")
                below.append(child)
                made += 1
        level = below
    return made + 1  # and the root


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_cpu_by_process(samba: SambaFileServer) -> dict[int, float]:
    """CPU seconds so far of each live process of this server (a difference taken per process is not lowered by
    a closed connection's child that exits meanwhile, as it takes its time with it)."""
    found, tick = {}, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(samba.conf_path).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        found[int(pid)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return found


def server_cpu_with_exited(samba: SambaFileServer) -> float:
    """CPU seconds so far of this server's live processes and of the children they reaped (a connection's smbd
    child exits with its connection: its time is then in its parent's cutime and cstime, counted once)."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(samba.conf_path).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


def listing_seconds(samba: SambaFileServer) -> tuple[float, float, float]:
    """Wall, client CPU and server CPU seconds of ``smbclient -c 'recurse; ls'`` (the server's: its connection's
    smbd child, reaped after it ends)."""
    cpu, served, started = _children_cpu(), server_cpu_with_exited(samba), time.perf_counter()
    subprocess.run(
        ["smbclient", samba.unc, "-U", samba.credentials(ADMIN_USER), "-c", "recurse; ls"],
        check=True,
        capture_output=True,
        timeout=3600,
    )
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
    time.sleep(1.0)  # the child exits with the connection and is reaped by smbd
    return seconds, cpu, server_cpu_with_exited(samba) - served


def walk_seconds(samba: SambaFileServer, in_flight: int, expected: int, *, armed: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds (this process, every thread) of a walk."""
    account, password = samba.credentials(ADMIN_USER).split("%", 1)
    with SmbShare(samba.host, "share", account, password, credits=max(64, in_flight * 5 + 8)) as share:
        watches = Watches(share) if armed else None
        served, cpu, started = server_cpu_by_process(samba), time.process_time(), time.perf_counter()
        arm = watches.arm_and_send if watches is not None else None
        count = sum(1 for folder in walk(share, in_flight=in_flight, send=arm) if folder.descriptor)
        while watches is not None and watches.parked:  # the walk parked each watch: re-arm them all
            watches.changes(timeout=0.05)
        if watches is not None:
            share.read_folder("")  # answered after every re-armed watch's request: the server has taken them all
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        served = sum(t - served.get(pid, 0.0) for pid, t in server_cpu_by_process(samba).items())
    if count != expected:
        raise SystemExit(f"walk read {count} descriptors, the share has {expected} folders")
    return seconds, cpu, served


class _Counted:
    """The loop's sink: counts the folders read with a descriptor; at the first scan's end takes the client's and
    the server's CPU (the connections are still open, their smbd children alive)."""

    def __init__(self, samba: SambaFileServer) -> None:
        self.samba = samba
        self.folders = 0
        self.done = threading.Event()
        self.at = self.cpu = 0.0
        self.served: dict[int, float] = {}

    def reconciling(self) -> None:
        pass

    def folder(self, folder: RemoteFolder, observed_at: float, *, new: bool) -> None:
        self.folders += folder.descriptor is not None

    def removed(self, path: str, observed_at: float) -> None:
        pass

    def scanned(self, observed_at: float) -> None:
        self.at, self.cpu, self.served = time.perf_counter(), time.process_time(), server_cpu_by_process(self.samba)
        self.done.set()

    def flush(self) -> None:
        pass


def loop_seconds(samba: SambaFileServer, connections: int, expected: int) -> tuple[float, float, float, float]:
    """Wall, client CPU and server CPU seconds of the collector's baseline (`ShareLoop`, connecting included), until
    every folder is read and its watch re-armed (`ShareLoop.parked` is 0); and the wall seconds until read."""
    account, password = samba.credentials(ADMIN_USER).split("%", 1)
    sink = _Counted(samba)
    loop = ShareLoop(
        lambda: SmbShare(samba.host, "share", account, password, credits=64),
        sink,
        LoopOptions(in_flight=8, connections=connections),
    )
    stopping = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stopping,))
    served, cpu, started = server_cpu_by_process(samba), time.process_time(), time.perf_counter()
    thread.start()
    finished = sink.done.wait(3600)
    while finished and loop.parked and thread.is_alive():  # read; then the loop re-arms the parked watches
        time.sleep(0.005)
    armed, cpu_armed, served_armed = time.perf_counter(), time.process_time(), server_cpu_by_process(samba)
    stopping.set()
    thread.join()
    if not finished or sink.folders != expected:
        raise SystemExit(f"the loop read {sink.folders} descriptors, the share has {expected} folders")
    return (
        armed - started,
        cpu_armed - cpu,
        sum(t - served.get(pid, 0.0) for pid, t in served_armed.items()),
        sink.at - started,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=5_000)
    parser.add_argument("--fanout", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="permwatch-bench-smb-"))
    with SambaFileServer(work, {}) as samba:
        total = fill(samba.share_path, args.folders, args.fanout)
        listing_seconds(samba)  # warm the server's caches for both sides alike
        listing, listing_cpu, listing_served = listing_seconds(samba)
        result: dict[str, float] = {
            "folders": total,
            "smbclient_listing_folders_per_s": round(total / listing),
            "smbclient_cpu_us_per_folder": round(listing_cpu / total * 1e6),
            "smbclient_server_cpu_us_per_folder": round(listing_served / total * 1e6),
        }
        print(
            f"{total} folders; smbclient recurse ls: {listing:.2f} s, {total / listing:,.0f} folders/s, "
            f"client CPU {listing_cpu / total * 1e6:.0f} µs/folder, "
            f"server CPU {listing_served / total * 1e6:.0f} µs/folder"
        )
        for in_flight in (1, 8, 16):
            seconds, cpu, served = walk_seconds(samba, in_flight, total)
            rate = total / seconds
            result[f"walk_{in_flight}_in_flight_folders_per_s"] = round(rate)
            result[f"walk_{in_flight}_in_flight_ratio"] = round(rate / (total / listing), 2)
            result[f"walk_{in_flight}_in_flight_cpu_us_per_folder"] = round(cpu / total * 1e6)
            result[f"walk_{in_flight}_in_flight_server_cpu_us_per_folder"] = round(served / total * 1e6)
            print(
                f"walk, {in_flight:2d} in flight: {seconds:.2f} s, {rate:,.0f} folders/s, {listing / seconds:.2f}×, "
                f"client CPU {cpu / total * 1e6:.0f} µs/folder, server CPU {served / total * 1e6:.0f} µs/folder"
            )
        seconds, cpu, served = walk_seconds(samba, 8, total, armed=True)  # the collector's baseline: watches armed
        result["baseline_armed_folders_per_s"] = round(total / seconds)
        result["baseline_armed_ratio"] = round(listing / seconds, 2)
        result["baseline_armed_cpu_us_per_folder"] = round(cpu / total * 1e6)
        result["baseline_armed_server_cpu_us_per_folder"] = round(served / total * 1e6)
        print(
            f"walk, 8 in flight, arming a watch per folder: {seconds:.2f} s, {total / seconds:,.0f} folders/s, "
            f"{listing / seconds:.2f}×, client CPU {cpu / total * 1e6:.0f} µs/folder, "
            f"server CPU {served / total * 1e6:.0f} µs/folder"
        )
        for connections in (1, 2):
            seconds, cpu, served, read = loop_seconds(samba, connections, total)
            key = f"loop_{connections}_connections"
            result[f"{key}_folders_per_s"] = round(total / seconds)
            result[f"{key}_read_folders_per_s"] = round(total / read)
            # what the machine's load does not blur: smbclient's CPU (client and server) a folder against ours
            result[f"{key}_cpu_ratio"] = round((listing_cpu + listing_served) / (cpu + served), 2)
            result[f"{key}_ratio"] = round(listing / seconds, 2)
            result[f"{key}_cpu_us_per_folder"] = round(cpu / total * 1e6)
            result[f"{key}_server_cpu_us_per_folder"] = round(served / total * 1e6)
            print(
                f"collector baseline (ShareLoop), {connections} connection(s): {seconds:.2f} s, "
                f"{total / seconds:,.0f} folders/s, {listing / seconds:.2f}×, client CPU {cpu / total * 1e6:.0f} "
                f"µs/folder, server CPU {served / total * 1e6:.0f} µs/folder, CPU ratio to smbclient's "
                f"{(listing_cpu + listing_served) / (cpu + served):.2f} (every folder read after {read:.2f} s, "
                f"every watch re-armed after {seconds:.2f} s)"
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

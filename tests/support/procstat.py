"""What a server process uses, read from ``/proc`` (Linux): memory, descriptors, sockets, threads.

- ``rss_kb``/``RssSampler``: resident memory, once or sampled by a background thread.
- ``fd_count``/``fd_targets``/``wait_fd_count``: the process's open descriptors.
- ``server_conn_count``: accepted TCP connections the process holds open on a given local port
  (its socket inodes matched against ``/proc/net/tcp{,6}``; listeners are not counted).
- ``thread_state``/``ThreadStateSampler``: a thread's scheduler state, wait channel and current
  syscall, from ``/proc/PID/task/TID/{stat,wchan,syscall}``.

Everything here reads ``/proc`` only; nothing trusts what the server says about itself.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

# x86_64 and aarch64 numbers of futex(2), for /proc/PID/task/TID/syscall.
FUTEX_SYSCALLS = {"x86_64": 202, "aarch64": 98}.get(os.uname().machine, -1)


# -- memory -----------------------------------------------------------------------------------
def rss_kb(pid):
    """VmRSS of ``pid`` in KiB (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a daemon thread until stopped."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.interval = interval
        self.samples = []  # (monotonic time, rss KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            kb = rss_kb(self.pid)
            if kb:
                self.samples.append((time.monotonic(), kb))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_kb(self):
        return max((kb for _, kb in self.samples), default=0)


# -- descriptors ------------------------------------------------------------------------------
def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid):
    """{fd: readlink target} for the process's open descriptors (vanished ones are skipped)."""
    out = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            pass
    return out


def wait_fd_count(pid, target, timeout=2.0, interval=0.05):
    """Poll until the process has at most ``target`` descriptors; return the last count seen."""
    deadline = time.monotonic() + timeout
    n = fd_count(pid)
    while n > target and time.monotonic() < deadline:
        time.sleep(interval)
        n = fd_count(pid)
    return n


def socket_inodes(pid):
    """Inodes of the process's socket descriptors."""
    out = set()
    for target in fd_targets(pid).values():
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


TCP_LISTEN = "0A"


def tcp_sockets(local_port):
    """{inode: state hex as in /proc/net/tcp} of TCP sockets (v4 and v6) on local ``local_port``.

    TIME_WAIT sockets (which have no inode) are left out. Asks the kernel through sock_diag
    netlink: ``/proc/net/tcp`` lists every socket of the host, and with tens of thousands of
    TIME_WAIT entries left by other runs one read of it takes ~0.3 s.
    """
    try:
        return _diag_tcp_sockets(local_port)
    except OSError:
        return _proc_tcp_sockets(local_port)


def _proc_tcp_sockets(local_port):
    out = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    port = int(parts[1].rsplit(":", 1)[1], 16)
                    if port == local_port:
                        inode = int(parts[9])
                        if inode:
                            out[inode] = parts[3]
        except OSError:
            pass
    return out


_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_TIME_WAIT = 6


def _diag_tcp_sockets(local_port):
    out = {}
    states = 0xFFF & ~(1 << _TCP_TIME_WAIT)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            # inet_diag_req_v2 with a zero inet_diag_sockid (48 bytes): dump every socket.
            req = struct.pack("=BBBxI48x", family, socket.IPPROTO_TCP, 0, states)
            hdr = struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY,
                              _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
            nl.send(hdr + req)
            done = False
            while not done:
                data = nl.recv(1 << 20)
                off = 0
                while off + 16 <= len(data):
                    length, mtype, _, _, _ = struct.unpack_from("=IHHII", data, off)
                    if length < 16:
                        raise OSError("bad netlink message")
                    if mtype == _NLMSG_DONE:
                        done = True
                        break
                    if mtype == _NLMSG_ERROR:
                        raise OSError("sock_diag error")
                    # inet_diag_msg: family, state, timer, retrans, sockid (sport be16 first)
                    body = off + 16
                    state = data[body + 1]
                    (sport,) = struct.unpack_from("!H", data, body + 4)
                    (inode,) = struct.unpack_from("=I", data, body + 4 + 48 + 16)
                    if sport == local_port and inode:
                        out[inode] = f"{state:02X}"
                    off += (length + 3) & ~3
    return out


def server_conn_count(pid, port):
    """Accepted TCP connections ``pid`` holds open on local ``port`` (any state but LISTEN)."""
    mine = socket_inodes(pid)
    return sum(1 for ino, st in tcp_sockets(port).items() if st != TCP_LISTEN and ino in mine)


def new_socket_count(pid, baseline):
    """Sockets ``pid`` holds that are not in ``baseline`` (a ``socket_inodes`` set taken when idle:
    the listeners and any internal socket pairs). Cheap (~0.3 ms): for dense sampling of accepted
    connections; ``server_conn_count`` is the exact but slower check."""
    return len(socket_inodes(pid) - baseline)


class Sampler:
    """Calls ``fn()`` every ``interval`` seconds in a daemon thread; keeps (time, value) pairs."""

    def __init__(self, fn, interval=0.01):
        self.fn = fn
        self.interval = interval
        self.samples = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.fn()))
            except OSError:
                self.errors += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    @property
    def values(self):
        return [v for _, v in self.samples]


def _sample_loop(fn, interval, stop, conn):
    samples, errors = [], 0
    while not stop.is_set():
        try:
            samples.append((time.monotonic(), fn()))
        except OSError:
            errors += 1
        stop.wait(interval)
    conn.send((samples, errors))
    conn.close()


class ProcessSampler(Sampler):
    """A ``Sampler`` in a forked process, so that busy threads of the test (GIL) cannot starve it."""

    def __init__(self, fn, interval=0.01):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.fn = fn
        self.interval = interval
        self.samples = []
        self.errors = 0
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_sample_loop, args=(fn, interval, self._stop, send),
                                 daemon=True)
        self._send = send

    def __enter__(self):
        self._proc.start()
        self._send.close()
        return self

    def stop(self):
        self._stop.set()
        if self._recv.poll(10):
            self.samples, self.errors = self._recv.recv()
        self._proc.join(5)
        if self._proc.exitcode is None:
            self._proc.kill()
            self._proc.join(5)
        self._recv.close()


# -- threads ----------------------------------------------------------------------------------
def thread_ids(pid):
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def thread_name(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/comm") as f:
        return f.read().strip()


def thread_state(pid, tid):
    """(state letter, wchan, syscall number or None) of one thread.

    ``state`` is R (running), S (interruptible sleep), D, ...; ``wchan`` is the kernel function
    the thread sleeps in ("" when unavailable or running); ``syscall`` is the number of the
    system call it is blocked in, -1 when running in user space, None if unreadable.
    """
    base = f"/proc/{pid}/task/{tid}"
    with open(f"{base}/stat") as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    try:
        with open(f"{base}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        wchan = ""
    if wchan == "0":
        wchan = ""
    try:
        with open(f"{base}/syscall") as f:
            first = f.read().split()[0]
        nr = -1 if first == "running" else int(first)
    except (OSError, IndexError, ValueError):
        nr = None
    return state, wchan, nr


def blocked_in_futex(pid, tid):
    """True if the thread sleeps in futex(2) (a mutex or condition variable wait)."""
    state, wchan, nr = thread_state(pid, tid)
    if state not in ("S", "D"):
        return False
    return nr == FUTEX_SYSCALLS or "futex" in wchan

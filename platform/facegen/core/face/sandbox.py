"""Untrusted image bytes are decoded in a sandbox: a small pool of child processes, each decode under a CPU-time and
an address-space limit (`resource.setrlimit`). A decode that overruns kills its worker (the kernel's SIGXCPU, or the
allocator failing under RLIMIT_AS), the pool replaces it, and the caller gets one clear InvalidImage naming the
field — never a thread of the service spinning for minutes. The cheap pre-checks (format, pixel cap, the JPEG
marker walk) run in the worker first, so the common bombs cost milliseconds.

The worker is a fresh interpreter importing only numpy and Pillow (not a fork: that would copy a replica's models and
threads)."""
from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass

import numpy as np

from facegen.core.errors import ImageTooLarge, InvalidImage


@dataclass(frozen=True)
class SandboxLimits:
    workers: int = 2  # decodes at once (per process that decodes: a service replica, the CLI)
    cpu_seconds: float = 2.0  # per decode: an ordinary 40 MP JPEG takes well under one
    memory_bytes: int = 3 * 1024**3  # address space of a worker: a 40 MP decode needs ~0.5 GB beyond Python's own
    wall_factor: float = 3.0  # a worker silent for wall_factor × cpu_seconds + 5 s is killed too


@dataclass
class Decoded:
    rgb: np.ndarray
    cpu_seconds: float  # what the decode cost in the worker (user + system)


def send(stream, obj) -> None:
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(blob)) + blob)
    stream.flush()


def recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    size = struct.unpack("<Q", head)[0]
    blob = stream.read(size)
    if len(blob) < size:
        raise EOFError
    return pickle.loads(blob)


class _Worker:
    """One child: `python -m facegen.core.face.decode_worker CPU_SECONDS MEMORY_BYTES` (a fresh interpreter: nothing
    of the parent — models, threads, its main module — comes along)."""

    def __init__(self, limits: SandboxLimits):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no pools reserving memory
        self.process = subprocess.Popen(
            [sys.executable, "-m", "facegen.core.face.decode_worker", str(limits.cpu_seconds), str(limits.memory_bytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def ask(self, job, wall: float):
        """The answer to `job`, or None when the worker died or stayed silent for `wall` seconds."""
        try:
            send(self.process.stdin, job)
            ready, _, _ = select.select([self.process.stdout], [], [], wall)
            return recv(self.process.stdout) if ready else None
        except (EOFError, OSError, pickle.UnpicklingError):
            return None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            stream.close()


class DecodePool:
    """`decode(data, name, max_pixels)` → Decoded, in one of `limits.workers` child processes."""

    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()
        self._idle: list[_Worker] = []
        self._free = threading.Semaphore(self.limits.workers)
        self._lock = threading.Lock()

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Worker(self.limits)

    def decode(self, data: bytes, name: str, max_pixels: int) -> Decoded:
        with self._free:
            worker = self._take()
            answer = worker.ask((bytes(data), name, max_pixels), self.limits.wall_factor * self.limits.cpu_seconds + 5)
            if answer is None:  # killed by its limits, or silent: never reused
                worker.kill()
                raise InvalidImage(f"{name} could not be decoded within {self.limits.cpu_seconds:g} s of CPU and "
                                   f"{self.limits.memory_bytes // 2**20} MiB: refused (re-save it as an ordinary "
                                   "JPEG, PNG or WebP)")
            with self._lock:
                self._idle.append(worker)
        if answer[0] == "ok":
            return Decoded(answer[1], answer[2])
        _, kind, message, _ = answer
        raise (ImageTooLarge if kind == "ImageTooLarge" else InvalidImage)(message)

    def close(self) -> None:
        with self._lock:
            for w in self._idle:
                w.kill()
            self._idle.clear()


_POOL: DecodePool | None = None
_POOL_LOCK = threading.Lock()


def decode_pool() -> DecodePool:
    """This process's pool, started on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = DecodePool()
        return _POOL

"""The sandbox's worker (facegen/core/face/sandbox.py starts it as `python -m facegen.core.face.decode_worker
CPU_SECONDS MEMORY_BYTES`): reads (bytes, name, max_pixels) jobs on stdin, decodes each under its limits, answers on
stdout. Pickles only ever come from the parent that started it."""
from __future__ import annotations

import sys
import time

from facegen.core.errors import ImageTooLarge, InvalidImage
from facegen.core.face.images import decode_untrusted_here
from facegen.core.face.sandbox import recv, send


def _limit_cpu(budget: float) -> None:
    """This decode may use `budget` CPU seconds: a profiling timer (process CPU time, sub-second; SIGPROF's default
    action ends the process) and, as a backstop in whole seconds, RLIMIT_CPU (SIGXCPU)."""
    import math
    import resource
    import signal

    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(used.ru_utime + used.ru_stime + budget) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard if hard == resource.RLIM_INFINITY else max(hard, soft)))
    signal.setitimer(signal.ITIMER_PROF, budget)


def serve(cpu_seconds: float, memory_bytes: int) -> None:
    """The loop on stdin/stdout: (bytes, name, max_pixels) in, ("ok", rgb, cpu) or ("error", kind, message, cpu)
    out."""
    import resource
    import signal

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a killed worker leaves no core file
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers on the answer channel
    while True:
        try:
            data, name, max_pixels = recv(stdin)
        except EOFError:
            return
        _limit_cpu(cpu_seconds)
        start = time.process_time()
        try:
            answer = ("ok", decode_untrusted_here(data, name, max_pixels))
        except (InvalidImage, ImageTooLarge) as e:
            answer = ("error", type(e).__name__, str(e))
        except MemoryError:
            answer = ("error", "ImageTooLarge", f"{name} needs more memory to decode than an image may use")
        except Exception:  # noqa: BLE001 — a decoder's own failure on hostile bytes: the image is unreadable
            import traceback

            traceback.print_exc()  # to the worker's stderr (the service's log), never to the client
            answer = ("error", "InvalidImage", f"{name} is not a readable image")
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        send(stdout, (*answer, time.process_time() - start))


if __name__ == "__main__":
    serve(float(sys.argv[1]), int(sys.argv[2]))

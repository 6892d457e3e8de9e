"""The service's limits, measured against a live tiny service on a local Ray (the figures of docs/serving.md
"Limits"): what each decoder bomb costs as a face and as a control image, a good photo encoded behind 8 concurrent
bombs, 60 slow clients with a valid key cut, and /healthz's latency meanwhile. The bombs are the tests' own
(tests/conftest.py `bomb_kinds`: every kind this service has met, generated).

    python bench/limits.py
"""
import base64
import importlib.util
import json
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).parent))
from common import record  # noqa: E402
from facegen.cluster.demo import shipped_photos  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key"
FLOOD_KEY = "bench-flood-key"  # the bombs come from a second client: one client holds at most 8 body slots


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def post(url: str, path: str, body: dict, key: str = KEY) -> tuple[int, float, str]:
    start = time.perf_counter()
    r = requests.post(url + path, data=json.dumps(body), timeout=120,
                      headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    return r.status_code, time.perf_counter() - start, r.text[:200]


def healthz(url: str) -> float:
    start = time.perf_counter()
    requests.get(url + "/healthz", timeout=30).raise_for_status()
    return time.perf_counter() - start


def while_running(url: str, work) -> tuple[object, list[float]]:
    """Run `work()` while polling /healthz every 0.25 s: (its result, the /healthz latencies)."""
    latencies, done = [], threading.Event()

    def poll():
        while not done.is_set():
            latencies.append(healthz(url))
            time.sleep(0.25)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        return work(), latencies
    finally:
        done.set()
        poller.join(timeout=30)


def slow_clients(url: str, n: int, every_s: float = 3.0, limit_s: float = 90.0) -> list[tuple[float, str]]:
    """`n` clients with a valid key sending a 100 kB body a byte every `every_s`: (seconds until answered, status)."""
    from urllib.parse import urlparse

    u, results, stop = urlparse(url), [], time.time() + limit_s

    def one():
        start = time.time()
        try:
            with socket.create_connection((u.hostname, u.port), timeout=10) as s:
                s.sendall((f"POST /v1/encode HTTP/1.1\r\nHost: {u.hostname}\r\nAuthorization: Bearer {KEY}\r\n"
                           "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n").encode())
                s.settimeout(every_s)
                while time.time() < stop:
                    try:
                        s.sendall(b" ")
                        line = s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                        results.append((time.time() - start, line))
                        return
                    except socket.timeout:
                        continue
        except OSError as e:
            results.append((time.time() - start, f"socket: {e}"))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=limit_s + 10)
    return results


def main() -> int:
    import ray
    from ray import serve

    bombs = _load(REPO / "tests" / "conftest.py", "facegen_test_conftest").bomb_kinds()
    serve_app = _load(REPO / "serve" / "app.py", "serve_app")
    photos = shipped_photos()
    good = base64.b64encode(photos["tom_hanks"].read_bytes()).decode()

    ray.init(num_cpus=2, logging_level="WARNING", include_dashboard=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(serve_app.deploy({"preset": "tiny", "methods": "faceclip", "keys": [KEY, FLOOD_KEY]}), name="limits",
              route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    result = {"preset": "tiny", "service": "one FaceCLIP generator + the face encoder, defaults"}
    try:
        assert post(url, "/v1/encode", {"method": "faceclip", "face_image": good})[0] == 200  # warm
        result["good_encode_s_alone"] = round(statistics.median(
            post(url, "/v1/encode", {"method": "faceclip", "face_image": good})[1] for _ in range(3)), 3)
        per_bomb = {}
        for kind, data in bombs.items():
            bomb = base64.b64encode(data).decode()
            face = post(url, "/v1/generate", {"method": "faceclip", "face_image": bomb, "prompt": "a chef", "steps": 2})
            control = post(url, "/v1/generate", {"method": "faceclip", "face_image": good, "prompt": "a chef",
                                                 "steps": 2, "control": {"control_image": bomb}})
            per_bomb[kind] = {"bytes": len(data), "as_face": [face[0], round(face[1], 2)],
                              "as_control": [control[0], round(control[1], 2)]}
        result["bombs"] = per_bomb
        encoded = [base64.b64encode(d).decode() for d in bombs.values()]

        def flood():
            with ThreadPoolExecutor(9) as pool:
                floods = [pool.submit(post, url, "/v1/encode", {"method": "faceclip", "face_image": encoded[i % len(encoded)]},
                                      FLOOD_KEY) for i in range(8)]
                time.sleep(0.2)
                status, seconds, _ = post(url, "/v1/encode", {"method": "faceclip", "face_image": good})
                return status, seconds, [f.result()[0] for f in floods]

        (status, seconds, flood_statuses), health = while_running(url, flood)
        result["good_encode_behind_8_bombs"] = {"status": status, "seconds": round(seconds, 2),
                                                "bomb_statuses": sorted(set(flood_statuses)),
                                                "healthz_max_s": round(max(health), 3)}
        answered, health = while_running(url, lambda: slow_clients(url, 60))
        result["slow_clients_60"] = {"answered": len(answered), "statuses": sorted({s for _, s in answered}),
                                     "cut_within_s_max": round(max(t for t, _ in answered), 1),
                                     "cut_within_s_median": round(statistics.median(t for t, _ in answered), 1),
                                     "healthz_max_s": round(max(health), 3)}
    finally:
        serve.shutdown()
        ray.shutdown()
    result["encode_memory"] = "8 photos of 40 MP: 237 MB peak in the face replica (tests/unit/test_serving.py)"
    record("limits", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

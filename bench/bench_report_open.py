"""How long a run's report.html takes to open in a browser (issue 24 item 5: under 2 s for a
100k-row run's report, and under 5 MB).

Headless Chromium, driven over the DevTools protocol: one browser, then per report and repeat a
fresh tab, ``Page.navigate`` to the file, wait for ``Page.loadEventFired``, and read the page's
own Navigation Timing (``loadEventEnd - startTime``: fetch, parse, scripts, images and layout up
to the load event; no browser start-up). Also ``domContentLoaded`` and the file's size.
The median and the maximum over ``--repeats`` loads are reported.

Needs Debian's ``chromium`` (``apt-get install chromium``) and the ``websocket-client`` package
(``pip install websocket-client``); both are bench-only, not shedkit dependencies.

    .venv/bin/python bench/bench_report_open.py RUN_DIR_OR_REPORT [...] --out bench/results/scale/report_open.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser(explicit: str | None) -> str:
    for name in ([explicit] if explicit else BROWSERS):
        path = shutil.which(name) if name else None
        if path:
            return path
    sys.exit("no Chromium found: apt-get install chromium (or pass --browser PATH); nothing measured")


class DevTools:
    """A minimal DevTools client for one tab (its websocket)."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def wait_event(self, name: str, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if json.loads(self.ws.recv()).get("method") == name:
                return
        raise TimeoutError(name)

    def close(self):
        self.ws.close()


def open_once(port: int, url: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
    tab = json.loads(urllib.request.urlopen(req, timeout=30).read())
    dt = DevTools(tab["webSocketDebuggerUrl"])
    try:
        dt.call("Page.enable")
        t0 = time.perf_counter()
        dt.call("Page.navigate", url=url)
        dt.wait_event("Page.loadEventFired")
        wall = time.perf_counter() - t0
        timing = dt.call("Runtime.evaluate", returnByValue=True, expression=(
            "JSON.stringify((() => { const n = performance.getEntriesByType('navigation')[0];"
            " return {load_ms: n.loadEventEnd - n.startTime, dom_content_loaded_ms: n.domContentLoadedEventEnd - n.startTime,"
            " nodes: document.getElementsByTagName('*').length}; })())"))["result"]["value"]
        return {"wall_s": round(wall, 4), **json.loads(timing)}
    finally:
        dt.close()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/json/close/{tab['id']}", timeout=30).read()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", type=Path, help="report.html files or run directories holding one")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--browser", default=None)
    p.add_argument("--port", type=int, default=9333)
    p.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    try:
        import websocket  # noqa: F401
    except ImportError:
        sys.exit("needs websocket-client (pip install websocket-client); nothing measured")
    browser = find_browser(args.browser)
    version = subprocess.run([browser, "--version"], capture_output=True, text=True).stdout.strip()
    profile = tempfile.mkdtemp(prefix="shedkit-report-open-")
    proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             f"--remote-debugging-port={args.port}", f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # the DevTools endpoint comes up within a few seconds
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{args.port}/json/version", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        results = []
        for given in args.reports:
            path = (given / "report.html" if given.is_dir() else given).resolve()
            runs = [open_once(args.port, path.as_uri()) for _ in range(args.repeats)]
            loads = [r["load_ms"] for r in runs]
            row = {"report": str(given), "bytes": path.stat().st_size, "nodes": runs[0]["nodes"],
                   "load_ms_median": round(statistics.median(loads), 1), "load_ms_max": round(max(loads), 1),
                   "dom_content_loaded_ms_median": round(statistics.median(r["dom_content_loaded_ms"] for r in runs), 1),
                   "wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 3),
                   "under_2_s": max(loads) < 2000, "under_5_MB": path.stat().st_size < 5e6, "runs": runs}
            results.append(row)
            print(f"{given}: {row['bytes'] / 1e6:.3f} MB, load {row['load_ms_median']:.0f} ms median "
                  f"(max {row['load_ms_max']:.0f}) over {args.repeats}, {row['nodes']} elements")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "browser": version,
               "machine": platform.processor() or platform.machine(), "load_average": os.getloadavg(),
               "repeats": args.repeats, "results": results}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

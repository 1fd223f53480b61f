"""The dashboard in a real browser: headless Chromium opens the page offline, logs no console error,
draws every figure with data, and a screenshot is saved for a human to look at.

Chromium is driven through the DevTools protocol over `--remote-debugging-pipe` (file descriptors 3
and 4), so the test needs no Python browser library. The page a user gets has no test code: the test
injects its error catcher and figure check (`PAGE_CHECK`) before the page's own scripts run, and also
collects what Chromium itself logs. It is skipped when /usr/bin/chromium is missing,
except in CI (the `CI` variable is set), where it fails instead.
"""

from __future__ import annotations

import base64
import fcntl
import importlib.util
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from autoembed.dashboard import write_dashboard

CHROMIUM = os.environ.get("AUTOEMBED_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
SCREENSHOT_COPY = REPO / "studies" / "_screenshots" / "dashboard.png"
FIGURE_IDS = {
    "fig-history",
    "fig-intermediate",
    "fig-compute",
    "fig-pareto",
    "fig-slices",
    "fig-importance",
    "fig-parallel",
}

pytestmark = pytest.mark.browser

# Injected before the page's own scripts: catches errors and console.error calls, and once the page has
# loaded writes "ok N" to window.__aeCheck when each of the N figures' traces hold data, else "fail: ...".
PAGE_CHECK = """
(function () {
  var errors = [];
  window.__aeErrors = errors;
  window.__aeCheck = "pending";
  window.addEventListener("error", function (e) { errors.push("error: " + (e.message || e)); });
  window.addEventListener("unhandledrejection", function (e) { errors.push("unhandled rejection: " + e.reason); });
  var original = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
  function points(trace) {
    var n = 0;
    ["x", "y", "values"].forEach(function (k) {
      if (trace[k] && trace[k].length > n) { n = trace[k].length; }
    });
    (trace.dimensions || []).forEach(function (d) {
      if (d.values && d.values.length > n) { n = d.values.length; }
    });
    return n;
  }
  function check() {
    var problems = [];
    var figures = document.querySelectorAll(".ae-figure");
    figures.forEach(function (box) {
      var plot = box.querySelector(".js-plotly-plot");
      if (!plot || !plot.data) { problems.push(box.id + " not drawn"); return; }
      var total = 0;
      plot.data.forEach(function (t) { total += points(t); });
      if (total === 0) { problems.push(box.id + " has no data"); }
    });
    if (typeof Plotly === "undefined") { problems.push("plotly.js missing"); }
    problems = problems.concat(errors);
    window.__aeCheck = problems.length ? "fail: " + problems.join("; ") : "ok " + figures.length;
  }
  window.addEventListener("load", function () { setTimeout(check, 500); });
})();
"""


def _chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}, and CI must run the browser test (apt-get install chromium)"
        )
    pytest.skip(f"Chromium is not installed at {CHROMIUM}")


def _above_ten(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class DevTools:
    """A minimal Chrome DevTools protocol client over `--remote-debugging-pipe`."""

    def __init__(self, binary: str, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium's ends move to fds >= 10, so that wiring them to 3 and 4 below cannot clobber either.
        to_chrome_r, from_chrome_w = (_above_ten(fd) for fd in (to_chrome_r, from_chrome_w))
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-unsafe-swiftshader",  # software WebGL for the parallel coordinates, without a warning
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # Chromium reads commands from fd 3 and writes replies to fd 4; bash (dash takes one-digit fds only) puts our pipes there.
        wire = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", wire, binary, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(to_chrome_r, from_chrome_w),
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(
                        f"Chromium exited: {self.process.stderr.read().decode(errors='replace')[-2000:]}"
                    )
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def console_errors(events: list[dict]) -> list[str]:
    """Errors the page logged: console.error/assert calls, uncaught exceptions, and browser log errors."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(
                "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            found.append("exception: " + str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log ({params['entry'].get('source')}): {params['entry']['text']}")
    return found


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("dashboard_render", REPO / "benchmarks" / "dashboard_render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def open_page(binary: str, page: Path, profile: Path, screenshot: Path | None = None) -> dict:
    """Open the page; return its figure check, the console errors and the page's own check marker."""
    browser = DevTools(binary, profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.addScriptToEvaluateOnNewDocument", {"source": PAGE_CHECK}, session=session)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired", timeout=60)
        marker = "pending"
        deadline = time.monotonic() + 30
        while marker == "pending" and time.monotonic() < deadline:
            time.sleep(0.2)
            marker = evaluate(browser, session, "window.__aeCheck || 'pending'")
        figures = evaluate(
            browser,
            session,
            """Array.from(document.querySelectorAll('.ae-figure')).map(function (box) {
                 var plot = box.querySelector('.js-plotly-plot');
                 var traces = plot && plot.data ? plot.data : [];
                 return {id: box.id, drawn: !!(plot && plot.data), traces: traces.length,
                         points: traces.map(function (t) {
                           var n = 0;
                           ['x', 'y', 'values'].forEach(function (k) { if (t[k] && t[k].length > n) n = t[k].length; });
                           (t.dimensions || []).forEach(function (d) { if (d.values && d.values.length > n) n = d.values.length; });
                           return n; }),
                         svg: box.querySelectorAll('svg').length};
               })""",
        )
        notice = evaluate(browser, session, "(document.getElementById('ae-notice') || {}).textContent || ''")
        if screenshot is not None:
            height = evaluate(browser, session, "document.documentElement.scrollHeight")
            browser.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1400, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            time.sleep(1.0)  # let plotly's responsive figures settle at the new size
            shot = browser.send(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        return {"marker": marker, "figures": figures, "errors": console_errors(browser.events), "notice": notice}
    finally:
        browser.close()


def evaluate(browser: DevTools, session: str, expression: str):
    result = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
    if "exceptionDetails" in result:
        raise RuntimeError(f"evaluating {expression[:60]!r} failed: {result['exceptionDetails']}")
    return result["result"].get("value")


def test_dashboard_in_chromium(tmp_path):
    binary = _chromium()
    bench = _load_benchmark()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    bench.make_synthetic_study(url, "browser", 120, seed=1)
    page = write_dashboard(url, "browser", tmp_path / "out" / "dashboard.html")
    screenshot = tmp_path / "dashboard.png"

    seen = open_page(binary, page, tmp_path / "profile", screenshot)

    assert seen["errors"] == []
    assert seen["marker"] == f"ok {len(FIGURE_IDS)}", seen["marker"]
    assert {f["id"] for f in seen["figures"]} == FIGURE_IDS
    for figure in seen["figures"]:
        assert figure["drawn"] and figure["svg"] > 0, figure
        assert sum(figure["points"]) > 0, figure
    assert screenshot.stat().st_size > 50_000
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, SCREENSHOT_COPY)


@pytest.mark.parametrize("states", [[], ["fail", "fail"]], ids=["empty", "all-failed"])
def test_dashboard_without_completed_trials_in_chromium(tmp_path, states):
    import optuna

    binary = _chromium()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    for _ in states:
        study.add_trial(
            optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"fail_reason": "NaN loss"})
        )
    page = write_dashboard(url, "s", tmp_path / "dashboard.html")

    seen = open_page(binary, page, tmp_path / "profile")

    assert seen["errors"] == []
    assert seen["marker"].startswith("ok"), seen["marker"]
    assert (
        ("no trials yet" in seen["notice"]) if not states else ("All 2 trials of this study failed" in seen["notice"])
    )


def test_the_browser_check_catches_a_broken_page(tmp_path):
    # The checks above would pass vacuously if neither Chromium's log nor PAGE_CHECK saw errors.
    import optuna

    binary = _chromium()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="s", direction="maximize")
    page = write_dashboard(url, "s", tmp_path / "dashboard.html")
    broken = '<script>console.error("broken on purpose"); null.x;</script></body>'
    page.write_text(page.read_text().replace("</body>", broken), encoding="utf-8")

    seen = open_page(binary, page, tmp_path / "profile")

    assert any("console.error: broken on purpose" in e for e in seen["errors"]), seen["errors"]
    assert any(e.startswith("exception: TypeError") for e in seen["errors"]), seen["errors"]
    assert seen["marker"].startswith("fail: ") and "broken on purpose" in seen["marker"], seen["marker"]
    assert "TypeError" in seen["marker"], seen["marker"]

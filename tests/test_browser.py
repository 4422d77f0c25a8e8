"""The report in a real browser: headless Chromium (Debian's ``chromium`` package) loads
``index.html`` from ``file://``; every ``<img>`` must decode (``naturalWidth > 0``), every
``<audio>`` must load its WAV (``readyState >= HAVE_METADATA`` and a finite duration), and the
console must stay free of errors. A full-page screenshot is saved.

No extra Python dependency: Chromium is driven over the Chrome DevTools Protocol through
``--remote-debugging-pipe`` (JSON messages separated by NUL bytes on file descriptors 3 and 4),
so no websocket library, no webdriver and no network port are needed.

Which report: ``$AUDIOCONV_REPORT`` (a path to an ``index.html``, e.g. ``runs/demo/report/index.html``
after ``make demo``) or, by default, a fresh ``--quick`` demo in a temporary folder.
The screenshot goes to ``$AUDIOCONV_SCREENSHOT`` or next to the report folder
(``<report>/../report_screenshot.png``). Run with ``make test-browser`` (``pytest -m browser``).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe (one page, flat session)."""

    def __init__(self, binary: str, width: int = 1280, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="audioconv-chromium-")
        # fds 3 (we write commands) and 4 (we read replies) in the child
        cmd_read, self._cmd_write = os.pipe()
        self._reply_read, reply_write = os.pipe()
        os.set_inheritable(cmd_read, True)
        os.set_inheritable(reply_write, True)

        def wire_fds():  # runs in the child between fork and exec
            os.dup2(cmd_read, 3)
            os.dup2(reply_write, 4)

        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds, close_fds=False,
        )
        os.close(cmd_read)
        os.close(reply_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._reply_read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe (exit code {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, timeout_s: float = 60.0, **params) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._cmd_write, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for_event(self, method: str, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        for i, ev in enumerate(self.events):
            if ev["method"] == method:
                return self.events.pop(i)
        while True:
            reply = self._read_message(deadline)
            if reply.get("method") == method:
                return reply
            if "method" in reply:
                self.events.append(reply)

    def evaluate(self, expression: str, timeout_s: float = 60.0):
        result = self.call("Runtime.evaluate", session=True, timeout_s=timeout_s, expression=expression,
                           awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads (``Log`` errors) seen so far."""
        errors = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif ev["method"] == "Runtime.exceptionThrown":
                errors.append(p.get("exceptionDetails", {}).get("text", "exception"))
            elif ev["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                errors.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
        return errors

    def screenshot(self, path: Path, max_height: int | None = None) -> Path:
        """Full-page PNG (or its top ``max_height`` CSS pixels)."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        width = int(self.evaluate("document.documentElement.scrollWidth"))
        if max_height:
            height = min(height, max_height)
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout_s=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_write, self._reply_read):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


#: Waits until every <audio> has its metadata or has failed (10 s at most), then reports.
CHECK_PAGE_JS = r"""
(async () => {
  const audios = Array.from(document.querySelectorAll('audio'));
  const settle = (a) => new Promise((resolve) => {
    if (a.readyState >= 1 || a.networkState === 3) return resolve();
    const done = () => resolve();
    a.addEventListener('loadedmetadata', done, {once: true});
    a.addEventListener('error', done, {once: true});
    a.querySelectorAll('source').forEach((s) => s.addEventListener('error', done, {once: true}));
    setTimeout(done, 10000);
  });
  audios.forEach((a) => { if (a.readyState === 0) a.load(); });
  await Promise.all(audios.map(settle));
  await Promise.all(Array.from(document.images).map((img) => img.decode().catch(() => null)));
  return {
    images: Array.from(document.images).map((img) => ({src: img.getAttribute('src'), complete: img.complete,
                                                       naturalWidth: img.naturalWidth})),
    audio: audios.map((a) => ({src: a.currentSrc || (a.querySelector('source') || {}).src || a.src,
                               readyState: a.readyState, networkState: a.networkState,
                               duration: Number.isFinite(a.duration) ? a.duration : null,
                               error: a.error ? a.error.code : null})),
  };
})()
"""


def check_page(browser: Chromium, index: Path) -> dict:
    """Open ``index`` and return ``{"images", "audio", "errors"}`` as seen by the browser."""
    browser.events.clear()
    browser.call("Page.navigate", session=True, url=index.resolve().as_uri())
    browser.wait_for_event("Page.loadEventFired")
    result = browser.evaluate(CHECK_PAGE_JS)
    time.sleep(0.2)  # let late Log entries arrive
    browser.evaluate("1")
    result["errors"] = browser.console_errors()
    return result


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium)")
    b = Chromium(binary)
    yield b
    b.close()


@pytest.fixture(scope="module")
def report_index(tmp_path_factory) -> Path:
    given = os.environ.get("AUDIOCONV_REPORT")
    if given:
        path = Path(given)
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            raise FileNotFoundError(f"AUDIOCONV_REPORT={given}: no index.html there")
        return path
    from audioconv.app.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    run_demo(out=out, device="cpu", progress=False, quick=True)
    return out / "report" / "index.html"


def _assert_loads(result: dict, audio: bool = True) -> None:
    assert result["images"], "the report has no images"
    assert result["audio"] or not audio, "the report has no audio players"
    broken = [i["src"] for i in result["images"] if not i["complete"] or i["naturalWidth"] <= 0]
    assert not broken, f"images that did not decode: {broken}"
    silent = [a["src"] for a in result["audio"]
              if a["readyState"] < 1 or a["error"] is not None or not a["duration"] or a["duration"] <= 0]
    assert not silent, f"audio that did not load: {silent}"
    assert not result["errors"], f"console errors: {result['errors']}"


def test_report_loads_in_chromium(browser, report_index):
    result = check_page(browser, report_index)
    _assert_loads(result)
    shot = Path(os.environ.get("AUDIOCONV_SCREENSHOT") or report_index.parent.parent / "report_screenshot.png")
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


@pytest.fixture(scope="module")
def run_report_index(tmp_path_factory) -> Path:
    """`audioconv report` of a tiny run trained by `audioconv train` on a mixed-format corpus, with a
    top-k scan saved in the run (so the report has misclassified clips, data tables and figures)."""
    from audioconv.cli import main
    from test_run_report import TRAIN_ARGS, _corpus

    root = tmp_path_factory.mktemp("run")
    manifest = _corpus(root / "corpus")
    run = root / "run"
    assert main(["train", "--manifest", str(manifest), "--out", str(run), *TRAIN_ARGS]) == 0
    assert main(["topk", "--checkpoint", str(run / "best.pt"), "--manifest", str(manifest), "--layers", "conv1,conv2",
                 "--k", "3", "--units", "2", "--device", "cpu", "--no-progress", "-o", str(run / "topk")]) == 0
    assert main(["report", str(run), "--device", "cpu", "--no-progress", "--max-misclassified", "50"]) == 0
    return run / "report" / "index.html"


def test_run_report_loads_in_chromium(browser, run_report_index):
    result = check_page(browser, run_report_index)
    summary = json.loads((run_report_index.parent / "report.json").read_text())
    _assert_loads(result, audio=summary["n_misclassified_shown"] > 0)
    assert len(result["audio"]) == summary["n_misclassified_shown"]
    assert all(a["duration"] == pytest.approx(1.0, abs=0.01) for a in result["audio"])  # the 1-s clips heard
    assert sum("topk_conv" in i["src"] for i in result["images"]) == 2
    shot = run_report_index.parent.parent / "run_report_screenshot.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000


def test_checker_catches_broken_report(browser, tmp_path):
    """The same checks on a page with a missing image, a missing WAV and a script error fail."""
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "ok.wav", np.zeros(1600), 16000)
    (tmp_path / "index.html").write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="missing.png"><audio controls preload="auto"><source src="ok.wav" type="audio/wav"></audio>'
        '<audio controls preload="auto"><source src="missing.wav" type="audio/wav"></audio>'
        "<script>console.error('boom')</script></body></html>")
    result = check_page(browser, tmp_path / "index.html")
    assert result["images"][0]["naturalWidth"] == 0
    ok, missing = result["audio"]
    assert ok["readyState"] >= 1 and ok["duration"] == pytest.approx(0.1, abs=1e-3)
    assert missing["readyState"] == 0
    assert any("boom" in e for e in result["errors"])
    assert any("missing.png" in e for e in result["errors"])

"""The report in a real browser: headless Chromium opens it offline and we check what it shows.

Chromium is driven over the DevTools protocol through a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes on file descriptors 3 and 4), so nothing beyond
the standard library is needed. The test installs nothing: without /usr/bin/chromium
it skips, loudly (``make test`` installs Debian's chromium first).

Checked: no console message at error level, no uncaught exception, no request that
leaves the file (no network, no CDN), every <img> decoded (naturalWidth > 0), every figure of
our own (inline SVG) shown with all its text inside it, every
section and domain present, text from the data shown as text (no injected element),
and a full-page screenshot that is not blank.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _report_fixtures import HOSTILE_NAME, HOSTILE_QUOTE, hostile_data_dir, summary_for  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "SKIPPED LOUDLY: /usr/bin/chromium is missing, so the report is not tested in a browser. "
        "Install it (apt-get install -y chromium; `make test` does) and rerun.",
        allow_module_level=True,
    )

#: Where screenshots are kept for a person to look at (set METAEVAL_SCREENSHOTS=DIR); default: pytest's tmp dir.
SCREENSHOT_DIR = os.environ.get("METAEVAL_SCREENSHOTS")
SECTION_IDS = ["overview", "domains", "evidence", "estimates", "risk-of-bias", "rules-move", "excluded", "direction-only", "assumptions", "priors",
               "diagnostics", "robustness", "comparison", "sensitivity", "calibration", "reading"]


class Chromium:
    """A headless Chromium and one page, spoken to over the DevTools protocol on a pipe."""

    def __init__(self, profile: Path, timeout: float = 60.0):
        self.timeout = timeout
        self.events: list[dict] = []
        self._next_id = 0
        self._buffer = b""
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        self._stderr = tempfile.TemporaryFile()

        def wire() -> None:  # in the child: commands on fd 3, replies on fd 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            pass_fds=(3, 4), preexec_fn=wire,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, session: bool = False, **params) -> dict:
        """Send a command and wait for its reply (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        """The first event ``method`` (already received or still to come)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"no answer from Chromium; its stderr ends:\n{self.stderr()[-2000:]}")
            ready, _, _ = select.select([self._from_child], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe; its stderr ends:\n{self.stderr()[-2000:]}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # the process this test started, by its handle
            self.proc.wait(timeout=10)
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stderr.close()


PAGE_FACTS = """(() => {
  const imgs = [...document.images];
  return {
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)).map(i => i.alt),
    scripts: document.scripts.length,
    injected: document.querySelectorAll('img[src="x"], main b, [onerror]').length,
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    text: document.body.innerText,
    title: document.title,
    width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight,
    figures: [...document.querySelectorAll('section.domain figure svg.chart')].map(s => s.getAttribute('aria-label')),
    charts: [...document.querySelectorAll('svg.chart')].map(s => {
      const box = s.getBoundingClientRect();
      const outside = [...s.querySelectorAll('text')].filter(t => {
        const r = t.getBoundingClientRect();
        return r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1;
      }).map(t => t.textContent);
      return {label: s.getAttribute('aria-label'), width: box.width, height: box.height, outside};
    }),
    dangling: [...document.querySelectorAll('a[href^="#"]')].map(a => a.getAttribute('href').slice(1)).filter(id => !document.getElementById(id)),
  };
})()"""


def _open(report: Path, profile: Path, shot: Path) -> tuple[dict, list[dict], bytes]:
    """Open the report, return facts about the page, the protocol events and a full-page PNG."""
    browser = Chromium(profile)
    try:
        browser.call("Emulation.setDeviceMetricsOverride", session=True, width=1200, height=900,
                     deviceScaleFactor=1, mobile=False)
        browser.call("Page.navigate", session=True, url=report.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        facts = browser.evaluate(PAGE_FACTS)
        height = min(int(facts["height"]), 16000)
        png = base64.b64decode(browser.call(
            "Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": 1200, "height": height, "scale": 1})["data"])
        shot.write_bytes(png)
        events = list(browser.events)
    finally:
        browser.close()
    return facts, events, png


def _problems(events: list[dict], report: Path) -> list[str]:
    """Console errors, uncaught exceptions and requests for anything but the report itself."""
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            out.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(f"log error: {params['entry'].get('text')} ({params['entry'].get('url')})")
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not (url.startswith("data:") or url == report.resolve().as_uri()):
                out.append(f"request: {url}")
        elif method == "Network.loadingFailed":
            out.append(f"failed load: {params.get('errorText')}")
    return out


def _not_blank(png: bytes) -> tuple[int, int, int]:
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = np.asarray(image.resize((200, max(1, image.height * 200 // image.width))))
    return image.width, image.height, len(np.unique(small.reshape(-1, 3), axis=0))


def _keep(shot: Path) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(SCREENSHOT_DIR) / shot.name)


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory):
    """The report of the two-project evidence whose texts carry HTML, with one extra section filled in."""
    from metaeval.harmonise import load_evidence
    from metaeval.plots import forest_plot
    from metaeval.report import write_report

    tmp = tmp_path_factory.mktemp("browser")
    evidence = load_evidence(hostile_data_dir(tmp))
    summary = summary_for(evidence, engine="mcmc")
    extras = {"sensitivity": {"text": "Scenario <tau> wider.", "table": [{"scenario": "HN(0.5)", "mu": 0.31}],
                              "figures": [{"caption": "Employment again", "figure": forest_plot(evidence, summary, "employment")}]}}
    path = write_report(tmp / "report.html", evidence, summary, extras=extras, progress=False)
    shot = tmp / "report-hostile.png"
    facts, events, png = _open(path, tmp / "profile", shot)
    _keep(shot)
    return {"path": path, "evidence": evidence, "summary": summary, "facts": facts, "events": events, "png": png}


def test_no_console_errors_and_no_network(hostile_report):
    assert _problems(hostile_report["events"], hostile_report["path"]) == []
    # the page did load: the protocol saw the navigation to the report file
    urls = [e["params"]["request"]["url"] for e in hostile_report["events"] if e.get("method") == "Network.requestWillBeSent"]
    assert hostile_report["path"].resolve().as_uri() in urls


def test_every_figure_loads(hostile_report):
    facts = hostile_report["facts"]
    # one forest plot per domain (inline SVG), and the supplied sensitivity figure (a PNG)
    assert facts["images"] == 1 and facts["broken"] == []
    assert facts["figures"] == ["Forest plot for Employment", "Forest plot for Self-support"]
    _charts_shown(facts, len(hostile_report["summary"].domains))


def _charts_shown(facts: dict, n: int) -> None:
    """``n`` SVG figures of our own, each laid out at a size, with no text (a label the chart reserved too little
    room for, a direction's words) outside its box."""
    assert len(facts["charts"]) == n
    for chart in facts["charts"]:
        assert chart["width"] > 400 and chart["height"] > 150, chart["label"]
        assert chart["outside"] == [], chart["label"]


def test_sections_domains_and_projects_are_shown(hostile_report):
    facts = hostile_report["facts"]
    for section in SECTION_IDS:
        assert section in facts["ids"], section
    assert "domain-employment" in facts["ids"] and "domain-self_support" in facts["ids"]
    text = facts["text"]
    for name in hostile_report["evidence"]["project_name"].unique():
        assert name in text
    for eid in hostile_report["evidence"]["estimate_id"]:
        assert eid in text
    assert "Scenario <tau> wider." in text  # the supplied sensitivity section
    assert "this report's evidence is not that evidence" in text  # the record of the appraisal rules is the bundled evidence's
    assert "No model comparison was run" in text  # a missing one says so
    assert facts["width"] <= 1200  # wide tables scroll inside their box, the page does not


def test_data_text_is_shown_as_text_not_markup(hostile_report):
    facts = hostile_report["facts"]
    assert facts["scripts"] == 0
    assert facts["injected"] == 0
    assert HOSTILE_NAME in facts["text"]
    assert HOSTILE_QUOTE in facts["text"]


def test_screenshot_shows_a_page(hostile_report):
    width, height, colours = _not_blank(hostile_report["png"])
    assert width == 1200 and height > 2000
    assert colours > 50  # text, tables and figures, not a blank or error page


def test_bundled_evidence_report_in_browser(tmp_path):
    """The bundled evidence with the exact engine's summary: the report a user gets, opened offline."""
    from metaeval.certainty import judge
    from metaeval.exact import fit_exact
    from metaeval.harmonise import load_evidence
    from metaeval.plots import forest_rows
    from metaeval.priors import parse_prior
    from metaeval.report import write_report

    evidence = load_evidence()
    summary = judge(fit_exact(evidence, priors={"mu": parse_prior("normal(0, 1)"), "tau": parse_prior("halfnormal(0.25)")}), evidence)
    path = write_report(tmp_path / "report.html", evidence, summary, progress=False)
    shot = tmp_path / "report-bundled.png"
    facts, events, png = _open(path, tmp_path / "profile", shot)
    _keep(shot)
    assert _problems(events, path) == []
    assert facts["broken"] == []
    plotted = [d for d in summary.domains
               if any(r["kind"] == "direction" or r.get("x") is not None or r.get("raw_x") is not None
                      for r in forest_rows(evidence, summary, d))]
    assert len(plotted) >= len(summary.domains) // 2
    assert facts["images"] == 0
    _charts_shown(facts, len(plotted))
    for project in evidence["project_name"].unique():
        assert project in facts["text"]
    for domain in summary.domains:
        assert any(i.startswith("domain-") and i.endswith(domain) for i in facts["ids"]), domain
    assert _not_blank(png)[2] > 50
    # what the appraisal rules move (the record is of this evidence): every rule's reason has its anchor, every link lands
    assert [i for i in facts["ids"] if i.startswith("rule-")] == [f"rule-{n}" for n in range(1, 7)] and facts["dangling"] == []
    assert "What the appraisal rules move" in facts["text"] and "Findings without a standard error" in facts["text"]
    assert "Possibly beneficial → Unclear" in " ".join(facts["text"].split())  # firm-oriented activation, before → after


def test_the_harness_sees_what_it_must_catch(tmp_path):
    """A page with a console error, a missing image and a request for the network fails every check above."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><main><img src="missing.png" alt="gone">'
        '<img src="http://127.0.0.1:9/remote.png" alt="remote"><script>console.error("boom")</script>'
        "</main></body></html>", encoding="utf-8")
    facts, events, _ = _open(page, tmp_path / "profile", tmp_path / "bad.png")
    problems = _problems(events, page)
    assert any("console.error" in p and "boom" in p for p in problems)
    assert any(p.startswith("request: http://127.0.0.1:9/remote.png") for p in problems)
    assert sorted(facts["broken"]) == ["gone", "remote"]
    assert facts["scripts"] == 1

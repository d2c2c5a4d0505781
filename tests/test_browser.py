"""report.html of a real run, opened in a real browser (headless Chromium): it renders, every
image decodes (naturalWidth > 0), nothing is logged to the console, and the data source and the
provenance table are on the page.

Chromium runs with --dump-dom after a virtual-time budget; a small probe script, put at the top
of a copy of the report, records load and console errors and what the page shows, and writes
them into the DOM that --dump-dom prints. Chromium comes from Debian (`apt-get install chromium`;
.ci/run installs it). Without it the test fails, unless this machine has no apt-get to install it.
"""
import json
import re
import shutil
import subprocess

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(e.message || ("failed to load " + (e.target && (e.target.src || e.target.href))));
  }, true);
  ["error", "warn"].forEach(function (kind) {
    var original = console[kind];
    console[kind] = function () {
      errors.push(kind + ": " + Array.prototype.join.call(arguments, " "));
      original.apply(console, arguments);
    };
  });
  function shown(selector) {
    var el = document.querySelector(selector);
    if (!el) return null;
    var box = el.getBoundingClientRect();
    return {text: el.innerText, width: box.width, height: box.height};
  }
  window.addEventListener("load", function () {
    var result = {
      title: document.title, errors: errors, data: shown("p.data"), provenance: shown("table.provenance"),
      images: Array.prototype.map.call(document.images, function (img) {
        return {alt: img.alt, complete: img.complete, naturalWidth: img.naturalWidth,
                shownWidth: img.getBoundingClientRect().width};
      })
    };
    var out = document.createElement("pre");
    out.id = "browser-probe";
    out.textContent = JSON.stringify(result);
    document.body.appendChild(out);
  });
})();
</script>"""


def browser() -> str:
    found = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("no Chromium here and no apt-get to install it (Debian: apt-get install chromium)")
    pytest.fail("no Chromium: install it with `apt-get install -y chromium` (.ci/run does)")


def open_in_browser(html_path, tmp_path) -> tuple[dict, str]:
    """(what the probe saw, Chromium's stderr) for the page at `html_path`."""
    page = tmp_path / "page.html"
    page.write_text(html_path.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--window-size=1280,2000", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = re.search(r'<pre id="browser-probe">(.*?)</pre>', proc.stdout, re.S)
    assert probe, f"the page never finished loading:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    text = probe.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    return json.loads(text), proc.stderr


def test_report_renders_in_a_real_browser(tiny_run, tmp_path):
    reports = tiny_run[0] / "results/reports"
    seen, stderr = open_in_browser(reports / "report.html", tmp_path)
    assert seen["title"] == "Deepfake detection validation report"
    assert seen["errors"] == [], seen["errors"]
    console = [line for line in stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console

    images = seen["images"]
    plots = json.loads((reports / "metrics.json").read_text())["plots"]
    assert len(images) == len(plots) >= 4
    for img in images:
        assert img["complete"] and img["naturalWidth"] > 0 and img["shownWidth"] > 0, img

    assert seen["data"] and seen["data"]["height"] > 0 and "demo" in seen["data"]["text"]
    provenance = json.loads((reports / "provenance.json").read_text())
    shown = seen["provenance"]
    assert shown and shown["height"] > 0 and shown["width"] > 0
    for value in (provenance["config_sha256"], provenance["data_manifest_sha256"], provenance["versions"]["torch"],
                  provenance["git"]["commit"]):
        assert value in shown["text"], value

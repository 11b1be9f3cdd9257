"""Open the report in headless Chromium, as a person would, and check that the page actually rendered."""
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium/Chrome on PATH (apt-get install chromium)")


def screenshot(html, png, width=1280, height=3600):
    """Screenshot ``html`` with headless Chromium at device scale 1."""
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--force-device-scale-factor=1",
           f"--window-size={width},{height}", f"--screenshot={png}", html.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert png.is_file(), done.stderr[-2000:]
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def _has_colour(pixels, rgb, tol=3):
    return bool((np.abs(pixels - np.array(rgb)).max(-1) <= tol).any())


def test_report_renders_in_headless_chromium(rendered, tmp_path):
    result, _ = rendered
    shot = screenshot(result.html, tmp_path / "report.png")
    assert shot.shape == (3600, 1280, 3)
    top = shot[:120]
    assert (top.sum(-1) < 200).mean() > 0.002, "no dark title text at the top of the page"
    assert shot.std() > 20, "the page is blank"
    # embedded figures were decoded and drawn: the class colours of the dataset's palette show up on screen
    from slimcv.data import build_dataset

    palette = build_dataset("synthetic-shapes", "val").info.palette
    for rgb in palette[1:]:
        assert _has_colour(shot, rgb), rgb
    # and the model colours of the comparison table's dots, read from the page itself
    import re

    hexes = dict.fromkeys(re.findall(r'class="dot" style="background: #([0-9a-f]{6})"', result.html.read_text()))
    assert len(hexes) >= 2
    for h in hexes:
        assert _has_colour(shot, tuple(int(h[k:k + 2], 16) for k in (0, 2, 4)), tol=6), h


LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const root = document.documentElement;
  const tables = [...document.querySelectorAll("#comparison + .scroll")].map(d => d.scrollWidth - d.clientWidth);
  const figures = [...document.querySelectorAll("figure img")].map(i => Math.round(i.getBoundingClientRect().width));
  document.body.setAttribute("data-layout", JSON.stringify({page: root.scrollWidth - root.clientWidth,
                                                            tables: tables, figures: figures}));
});
</script>"""


def layout(html, tmp_path, width):
    """Open the report at ``width`` CSS pixels and read what overflows: the page, the comparison table (pixels
    hidden to its right) and each figure's drawn width."""
    import json
    import re

    probe = tmp_path / f"layout_{width}.html"
    probe.write_text(html.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", f"--user-data-dir={tmp_path / f'profile_{width}'}", f"--window-size={width},2000",
           "--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r'data-layout="([^"]*)"', done.stdout)
    assert found, done.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_report_layout_wide_and_narrow(rendered, tmp_path):
    result, _ = rendered
    wide = layout(result.html, tmp_path, 1400)
    assert wide["page"] <= 0 and wide["tables"] == [0], wide  # the whole comparison table in view at 1400 px
    narrow = layout(result.html, tmp_path, 420)
    assert narrow["page"] <= 0, narrow  # wide content scrolls inside its own box, the page itself does not
    assert narrow["figures"] and min(narrow["figures"]) >= 700, narrow  # figures keep a readable size

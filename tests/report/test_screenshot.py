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
    # and the model colours of the comparison table (tab10 blue and orange)
    assert _has_colour(shot, (31, 119, 180)) and _has_colour(shot, (255, 127, 14))

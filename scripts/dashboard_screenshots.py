"""Take the README's dashboard screenshots (docs/dashboard.png, docs/dashboard-zoom.png).

Starts a ``StreamServer`` in this process, publishes four runs of realistic curves (one still
running, one with a loss spike), opens the dashboard in headless Chromium (tests/browser.py's
launch arguments) and saves two PNGs: the overview with a tooltip, and a zoomed chart with
"ignore outliers" on. Look at them before committing.

    .venv/bin/python scripts/dashboard_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import CHROMIUM_ARGS, chromium_executable  # noqa: E402

from lightning_stream.config import ServerConfig  # noqa: E402
from lightning_stream.server import StreamServer  # noqa: E402

RUNS = {
    "lr_3e-4/version_0": (3e-4, 3000),
    "lr_1e-3/version_0": (1e-3, 3000),
    "lr_1e-3/version_1": (1e-3, 2200),
    "lr_3e-3/version_0": (3e-3, 3000),
}
WALL0 = 1_764_000_000.0


def publish(server: StreamServer) -> None:
    rng = random.Random(7)
    for run, (lr, steps) in RUNS.items():
        speed = math.log10(lr / 1e-4)
        for step in range(0, steps, 5):
            t = step / 3000
            wall = WALL0 + step * 0.35
            loss = 0.25 + 2.1 * math.exp(-t * 4 * speed) + rng.gauss(0, 0.06)
            if run == "lr_3e-3/version_0" and step == 1405:
                loss = 40.0  # a divergence spike: "ignore outliers" keeps the curve readable
            server.publish(run, "train/loss", step, loss, wall_time=wall)
            server.publish(
                run,
                "train/acc",
                step,
                min(0.99, 0.97 - 0.85 * math.exp(-t * 3 * speed) + rng.gauss(0, 0.01)),
                wall_time=wall,
            )
            server.publish(run, "lr-Adam", step, lr * 0.5 * (1 + math.cos(math.pi * t)), wall_time=wall)
            if step % 250 == 0:
                server.publish(
                    run, "val/loss", step, 0.32 + 1.9 * math.exp(-t * 3.5 * speed) + rng.gauss(0, 0.02), wall_time=wall
                )
                server.publish(
                    run, "val/acc", step, 0.95 - 0.8 * math.exp(-t * 3 * speed) + rng.gauss(0, 0.005), wall_time=wall
                )
                server.publish(run, "epoch", step, step // 250, wall_time=wall)
        server.publish_status(run, "finished" if run != "lr_1e-3/version_1" else "epoch", epoch=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    server = StreamServer(ServerConfig(registry=False, watchdog_interval_s=0)).start()
    try:
        publish(server)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 860}, color_scheme="dark", device_scale_factor=1)
            page.goto(server.url + "/?smoothing=0.7")
            page.wait_for_function(
                "() => { const p = window.lightningStream.progress(); return p.inView > 0 && p.complete === p.inView; }",
                timeout=60_000,
            )
            box = page.locator('.chart[data-tag="train/loss"] canvas.overlay').bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] * 0.62, box["y"] + box["height"] * 0.5)
            page.wait_for_selector("#tooltip:not([hidden])")
            time.sleep(0.3)
            page.screenshot(path=str(args.out / "dashboard.png"))
            page.mouse.move(5, 5)
            page.click('.chart[data-tag="train/loss"] [data-tool="pin"]')
            page.click('.chart[data-tag="train/loss"] [data-tool="outliers"]')
            page.evaluate("() => window.lightningStream.zoom('train/loss', [900, 2100])")
            page.wait_for_function(
                "() => { const p = window.lightningStream.progress(); return p.complete === p.inView; }", timeout=60_000
            )
            time.sleep(0.3)
            page.screenshot(path=str(args.out / "dashboard-zoom.png"))
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()

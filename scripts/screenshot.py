"""Take the README's screenshot: start the app, describe an example scene in the Image tab, save a PNG.

    .venv/bin/python scripts/screenshot.py docs/screenshot.png [--locale zh-CN] [--tab Image|Microphone|Text]

Uses the system chromium through playwright (never `playwright install`).
"""

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
for name, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                    "GRADIO_ANALYTICS_ENABLED": "False"}.items():
    os.environ.setdefault(name, value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def shoot(url: str, out: Path, locale: str, tab: str):
    from playwright.async_api import async_playwright

    examples = ROOT / "assets" / "examples"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(locale=locale, viewport={"width": 1280, "height": 900})
        await page.goto(url)
        await page.wait_for_selector("button.primary")
        if tab == "Image" and (scene := next(iter(sorted(examples.glob("scene_*.png"))), None)):
            await page.locator("input[type=file]").first.set_input_files(str(scene))
            await page.wait_for_timeout(1000)
            await page.locator("button.primary").first.click()
        elif tab != "Image":
            await page.get_by_role("tab").nth({"Microphone": 1, "Text": 2}[tab]).click()
        await page.wait_for_timeout(4000)
        out.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(out))
        await browser.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--locale", default="en-US")
    parser.add_argument("--tab", default="Image", choices=["Image", "Microphone", "Text"])
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import app

    port = free_port()
    demo = app.build_demo()
    demo.launch(**app.launch_kwargs(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True))
    try:
        asyncio.run(shoot(f"http://127.0.0.1:{port}/", args.out, args.locale, args.tab))
    finally:
        demo.close()
    print(args.out)


if __name__ == "__main__":
    main()

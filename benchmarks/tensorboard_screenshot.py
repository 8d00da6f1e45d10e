"""Screenshots of a real TensorBoard: one image card of a run at its first and its last step, taken by
headless Chromium from a loopback TensorBoard (Debian: `apt-get install chromium`). Chromium is driven
through the DevTools protocol over a pipe (`--remote-debugging-pipe`), so nothing beyond the standard
library is needed.

    python benchmarks/tensorboard_screenshot.py RUN_DIR --tag sharing/overlap_ffn --out /tmp/overlap

writes <out>_first.png and <out>_last.png.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# Set every image card's step (TensorBoard's tf-image-loader, inside shadow roots) to its first or last
# step, as a user moving its slider would; returns how many cards were set.
SLIDE = """
(() => {
  const found = [];
  const walk = root => root.querySelectorAll('*').forEach(e => {
    if (e.tagName === 'TF-IMAGE-LOADER') found.push(e);
    if (e.shadowRoot) walk(e.shadowRoot);
  });
  walk(document);
  found.forEach(card => { card._stepIndex = %s ? 0 : card._steps.length - 1; });
  return found.map(card => card._steps.length);
})()
"""


class DevTools:
    """The DevTools protocol over Chromium's pipe: JSON messages separated by NUL bytes."""

    def __init__(self, chromium: str):
        to_chrome_read, self.write = os.pipe()
        self.read, from_chrome_write = os.pipe()

        def child_fds() -> None:  # copies first: a pipe may already sit at 3 or 4, and dup2 onto itself keeps close-on-exec
            read, write = os.dup(to_chrome_read), os.dup(from_chrome_write)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--window-size=1400,1000",
             "about:blank"], close_fds=False, preexec_fn=child_fds,  # the fds are placed at 3 and 4 before exec
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_read)
        os.close(from_chrome_write)
        self.buffer, self.next_id = b"", 0

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self.write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe during {method}")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def close(self) -> None:
        self.process.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tag", default="sharing/overlap_ffn", help="The image tag to show.")
    parser.add_argument("--out", required=True, help="Path prefix of the two screenshots.")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium on PATH: apt-get install chromium")
    port = free_port()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(args.run_dir / "tensorboard"),
                              "--host", "127.0.0.1", "--port", str(port), "--samples_per_plugin", "images=1000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    browser = DevTools(chromium)
    try:
        wait_for(f"http://127.0.0.1:{port}/data/logdir")
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.call("Page.enable", session)
        # The legacy image dashboard filters cards by a regex in the URL; one card, one run.
        url = f"http://127.0.0.1:{port}/?darkMode=false#images&tagFilter={args.tag.replace('/', '%2F')}"
        browser.call("Page.navigate", session, url=url)
        deadline = time.time() + 90  # the dashboard fetches runs, tags, then each card's images
        while time.time() < deadline:
            time.sleep(3)
            steps = browser.call("Runtime.evaluate", session, expression=SLIDE % "false", returnByValue=True)["result"]["value"]
            if steps and all(steps):
                break
        for first, name in (("true", "first"), ("false", "last")):
            steps = browser.call("Runtime.evaluate", session, expression=SLIDE % first, returnByValue=True)["result"]["value"]
            time.sleep(3)
            shot = browser.call("Page.captureScreenshot", session, format="png")["data"]
            path = Path(f"{args.out}_{name}.png")
            path.write_bytes(base64.b64decode(shot))
            print(f"{path}: {len(steps)} image cards ({steps} steps each) at their {name} step")
    finally:
        browser.close()
        board.kill()


if __name__ == "__main__":
    main()

"""`devcontainer up` to the first response, measured with the Dev Containers reference CLI on podman.

    STACK_BASE_IMAGE=localhost/debian-python3:bookworm .venv/bin/python benchmarks/devcontainer_up.py \
        [--template simple] [--cold]

A new project (``flask-stack init``) is brought up with ``devcontainer up --docker-path podman`` (the CLI from
``.ci/npm``, as .ci/run installs it); the time is from the command's start to the first 200 from the template's
page on the published port. Warm: the development image exists (the ``initializeCommand`` finds it current).
``--cold`` first removes the development image, so the ``initializeCommand`` (``flask-stack dev-image``) builds it:
other projects' containers of the same tag are unaffected, but the next `flask-stack run` of any project on this
machine finds it rebuilt. The container, its volume and its ``-uid`` image are removed afterwards. No target: the
figures are reported in README "Dev Containers and devfiles" notes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

from container import devcontainers as dc  # noqa: E402
from flask_stack.container_image import dev_image_tag  # noqa: E402

PAGES = {"simple": "/hello", "web": "/", "api": "/items"}


def first_response(url: str, timeout: float = 900.0) -> None:
    """Poll ``url`` every 50 ms until it answers 200; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="simple", choices=sorted(PAGES))
    parser.add_argument("--cold", action="store_true", help="remove the development image first")
    args = parser.parse_args()
    os.environ.setdefault("STACK_BASE_IMAGE", "localhost/debian-python3:bookworm")
    if args.cold:
        subprocess.run(["podman", "rmi", "-f", dev_image_tag()], capture_output=True, check=False)
    with tempfile.TemporaryDirectory(prefix="devc-bench-") as tmp:
        project = Path(tmp) / f"{args.template}-bench"
        subprocess.run([sys.executable, "-m", "flask_stack", "init", str(project), "--template", args.template],
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=True, check=True)
        dc.for_this_engine(project)
        try:
            started = time.monotonic()
            container = dc.up(project)["containerId"]
            up_done = time.monotonic() - started
            first_response(f"http://127.0.0.1:{dc.published(container, 8080)}{PAGES[args.template]}")
            total = time.monotonic() - started
        finally:
            dc.remove_dev_container(project)
    state = "cold (image built by the initializeCommand)" if args.cold else "warm (image present)"
    print(f"{args.template}, {state}: devcontainer up {up_done:.1f} s, first response {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""03_batch_partitioning.ipynb in JupyterLab, in a real (headless) Chromium driven by Playwright.

JupyterLab runs on loopback in the test's temporary directory, with its own
settings and a known token. The test runs every cell through the Run menu,
checks that the cluster graphs (SVG, from Graphviz or the layered renderer,
whichever the machine has) and the Explorer's widgets rendered,
drags the batch-size slider, clicks Run and checks that the Explorer shows the
new run, then saves screenshots under the temporary directory.

It skips only when no Chromium executable can be found (``.ci/run`` installs
Debian's ``chromium``); every other failure is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import NOTEBOOKS

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and os.path.exists(p)), None
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOTEBOOK = "03_batch_partitioning.ipynb"
TOKEN = "mlcache-lab-browser-test"
SERVER_START_S = 120
RUN_ALL_S = 240
RUN_ONE_S = 120

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium not found at /usr/bin/chromium or on PATH: apt-get install chromium "
        "(.ci/run does this)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_server(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(
        f"JupyterLab did not answer in {SERVER_START_S} s:\n{log.read_text()[-4000:]}"
    )


@pytest.fixture
def jupyterlab(tmp_path: Path, kernel_env: dict[str, str]) -> Iterator[str]:
    """A JupyterLab server on loopback serving a copy of the notebook; its base URL."""
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOKS / NOTEBOOK, root / "notebooks" / NOTEBOOK)
    settings = tmp_path / "settings"
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    # Every cell in the DOM, so that the checks see outputs scrolled out of view.
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    env = {
        **kernel_env,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter_runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter_data"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    port = _free_port()
    log = tmp_path / "jupyterlab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--no-browser",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.news_url=",
                "--LabApp.extension_manager=readonly",
                *(["--allow-root"] if os.geteuid() == 0 else []),
            ],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(url, proc, log)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)  # a clean shutdown stops the kernels too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_every_cell_ran(prompts: Any, timeout_s: float) -> None:
    """Every code cell's prompt shows an execution count (``[7]:``), none ``[*]:`` or ``[ ]:``."""
    deadline = time.monotonic() + timeout_s
    texts: list[str] = []
    while time.monotonic() < deadline:
        texts = prompts.all_inner_texts()
        if texts and all(re.fullmatch(r"\[\d+\]:", t.strip()) for t in texts):
            return
        time.sleep(1.0)
    raise AssertionError(f"the notebook did not finish in {timeout_s} s; prompts: {texts}")


def test_notebook_03_runs_in_jupyterlab_and_the_explorer_reruns(
    jupyterlab: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"{jupyterlab}/lab/tree/notebooks/{NOTEBOOK}?token={TOKEN}")
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
            expect(notebook).to_be_visible(timeout=SERVER_START_S * 1000)
            no_news = page.get_by_role("button", name="No", exact=True)  # the news toast
            if no_news.count():
                no_news.first.click()
            # The kernel is connected once the status bar says so.
            expect(page.locator(".jp-StatusBar-Widget")).to_contain_text(
                "| Idle", timeout=SERVER_START_S * 1000
            )

            # Run every cell through the menu, as a user does.
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
            prompts = notebook.locator(".jp-CodeCell .jp-InputPrompt")
            assert prompts.count() >= 5
            _wait_until_every_cell_ran(prompts, RUN_ALL_S)
            errors = notebook.locator("[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t]
            assert tracebacks == [], tracebacks

            # The cluster graphs: one SVG per zoo model (Graphviz's or the layered renderer's).
            # JupyterLab shows an untrusted notebook's SVG as an <img> of it, a trusted one inline.
            graphs = notebook.locator(
                ".jp-OutputArea-output[data-mime-type='image/svg+xml'] :is(svg, img)"
            )
            expect(graphs.first).to_be_visible()
            assert graphs.count() >= 4
            first = graphs.first
            shown = first.text_content() or urllib.parse.unquote(first.get_attribute("src") or "")
            assert "batched" in shown

            # The Explorer and its widgets.
            explorer = notebook.locator(".mcl-explorer")
            expect(explorer).to_be_visible()
            explorer.locator(".mcl-explorer-run").scroll_into_view_if_needed()
            slider = explorer.locator(".mcl-explorer-batch-size")
            readout = slider.locator(".widget-readout")
            expect(readout).to_have_text("37")
            expect(explorer.locator(".mcl-explorer-policy select")).to_have_value("chunk")
            expect(explorer.locator(".mcl-explorer-micro-batch")).to_be_visible()
            run = explorer.locator("button.mcl-explorer-run")
            expect(run).to_be_visible()
            status = explorer.locator(".mcl-explorer-status")
            expect(status).to_contain_text("Run 1: batch size 37")
            expect(explorer.locator(".mcl-explorer-graph svg").first).to_be_visible()
            expect(explorer.locator(".mcl-explorer-graph")).to_contain_text("ran 3× at 3×16")
            expect(explorer.locator(".mcl-explorer-timeline")).to_be_visible()
            page.screenshot(path=str(tmp_path / "explorer_first_run.png"))

            # Drag the batch-size handle to the left end of the track: batch size 1.
            track = slider.locator(".noUi-target")
            handle = slider.locator(".noUi-handle")
            handle.scroll_into_view_if_needed()
            box, grip = track.bounding_box(), handle.bounding_box()
            assert box is not None and grip is not None
            page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] - 20, grip["y"] + grip["height"] / 2, steps=10)
            page.mouse.up()
            expect(readout).to_have_text("1")

            run.click()
            expect(status).to_contain_text("Run 2: batch size 1", timeout=RUN_ONE_S * 1000)
            # A new batch size under chunk compiles nothing new.
            expect(status).to_contain_text("0 XLA compilations")
            expect(explorer.locator(".mcl-explorer-graph")).to_contain_text("ran 1× at 16")
            expect(explorer.locator(".mcl-explorer-history tr")).to_have_count(3)  # head + 2
            expect(explorer.locator(".mcl-explorer-error")).to_have_text("")
            explorer.screenshot(path=str(tmp_path / "explorer.png"))
            page.screenshot(path=str(tmp_path / "notebook.png"))
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"))  # what the page showed
            raise
        finally:
            browser.close()
    for name in ("explorer_first_run.png", "explorer.png", "notebook.png"):
        assert (tmp_path / name).stat().st_size > 10_000

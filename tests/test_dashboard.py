"""The web dashboard in a real headless Chromium, served by the installed ``ipld-scheduler`` script.

Asserts what a person would see: the peer, its members and their liveness, workflows with status and
owner, the recent DAG with clickable CIDs, and live updates when work is scheduled from another
process. Saves ``docs/dashboard.png`` for the README.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import SCRIPT, clean_env, cli_json

from ipld_scheduler.identity import Signer

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
JOBS = 10
LATE = 3
"""Workflows another peer scheduled, imported after alpha's own: low heights arriving last."""
"""Nightly jobs scheduled over three members: alpha owns none of them in only (2/3)^10 < 2% of runs."""
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def cli(repo: Path, *args: str) -> dict[str, Any]:
    return cli_json(repo, *args)


def _serve(repo: Path, *argv: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [str(SCRIPT), "--repo", str(repo), "--json", *argv],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise AssertionError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
    ready: dict[str, Any] = json.loads(line)
    assert ready["event"] == "ready"
    return proc, ready


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A repo with history, served by ``ipld-scheduler run`` (peer runtime, liveness, execution)."""
    if not CHROMIUM.exists():
        reason = "needs /usr/bin/chromium (apt-get install chromium; scripts/test.sh installs it as root)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    repo = tmp_path / "alpha"
    cli(repo, "init", "--peer-id", "alpha")  # founds a network; beta is invited, gamma admitted by key
    token = cli(repo, "invite", "beta", "--roles", "submitter,worker")["token"]
    gamma_key = Signer.generate("gamma").public_key.hex()
    cli(repo, "add-peer", "gamma", "--key", gamma_key, "--roles", "worker")
    for i in range(JOBS):
        name = f"Nightly job {i}"
        cli(
            repo,
            "schedule",
            "--id",
            f"nightly-{i}",
            "--name",
            name,
            "--tags",
            "data_processing",
            "--run",
            "echo ok",
        )
    hostile = ["--id", "scrape-<b>bold</b>", "--name", "<script>alert(1)</script>"]
    cli(repo, "schedule", "--manual", *hostile, "--tags", "web_scrape")
    beta = tmp_path / "beta"
    cli(repo, "export", str(tmp_path / "alpha.car"))
    cli(beta, "join", token, "--car", str(tmp_path / "alpha.car"))
    for i in range(LATE):
        cli(beta, "schedule", "--manual", "--id", f"from-beta-{i}", "--tags", "p2p_eligible")
    cli(beta, "export", str(tmp_path / "beta.car"))
    cli(repo, "import", str(tmp_path / "beta.car"))
    proc, ready = _serve(repo, *_server_argv())
    try:
        yield repo, ready
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert proc.returncode == 0
        assert not (repo / "api").exists()


def _server_argv() -> list[str]:
    try:
        import ipld_scheduler.daemon  # noqa: F401
    except ImportError:
        return ["dashboard"]
    # Fast timings: beta and gamma were never started, so they are never heard: shown 'unknown' and
    # never evicted; owners stay put and alpha runs its own work.
    return ["run", "--fast"]


def test_dashboard_shows_peers_workflows_and_the_dag_live(served: tuple[Path, dict[str, Any]]) -> None:
    from playwright.sync_api import expect, sync_playwright

    repo, ready = served
    url = ready["dashboard"]
    served_by_peer = "metrics" in ready
    # The way a person opens it: `ipld-scheduler dashboard` prints the URL that carries the token once.
    if served_by_peer:
        login = cli(repo, "dashboard")["dashboard"]
    else:  # served by `dashboard` itself, which printed the login URL
        login, url = url, url.split("?token=")[0]
    assert login.startswith(url + "?token=")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            stranger = browser.new_page()
            refused = stranger.goto(url)  # no token, no cookie: nothing but the error envelope
            assert refused is not None and refused.status == 401
            assert json.loads(stranger.locator("body").inner_text())["code"] == "unauthorized"
            stranger.close()

            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(login)
            assert page.url == url  # the token left the address bar (and the history) at once
            cookies = page.context.cookies()
            assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]
            expect(page.locator("#peer-id")).to_have_text("alpha")
            expect(page.locator("#connection")).to_have_text("live")
            expect(page.locator("#num-peers")).to_have_text("3")
            expect(page.locator("#total-workflows")).to_have_text(str(JOBS + 1 + LATE))

            peers = page.locator("#peers tbody tr")
            expect(peers).to_have_count(3)
            expect(peers.filter(has_text="alpha (this peer)")).to_have_count(1)

            rows = page.locator("#workflows tbody tr")
            expect(rows).to_have_count(JOBS + 1 + LATE)
            owners = {r["workflow_id"]: r["owner"] for r in cli(repo, "workflows")["workflows"]}
            for wid, owner in owners.items():
                expect(rows.filter(has_text=wid).locator("td").nth(3)).to_have_text(owner)
            if served_by_peer:
                # alpha runs its own work; the page follows without a reload
                for wid in (w for w, o in owners.items() if o == "alpha" and w.startswith("nightly")):
                    expect(rows.filter(has_text=wid)).to_contain_text("completed", timeout=20_000)
                expect(page.locator("#peers tbody tr").filter(has_text="beta")).to_contain_text("unknown")
                expect(page.locator("#peers tbody tr").filter(has_text="alpha")).to_contain_text("alive")
            # Hostile names are shown as text, never run as markup.
            expect(rows.filter(has_text="<script>alert(1)</script>")).to_have_count(1)
            expect(page.locator("#workflows b")).to_have_count(0)

            events = page.locator("#events tbody tr")
            expect(events.filter(has_text="schedule").first).to_be_visible()
            expect(page.locator("#dag-graph circle").first).to_be_visible()

            # Live: work scheduled by another process appears without a reload.
            cli(
                repo,
                "schedule",
                "--manual",
                "--id",
                "late-arrival",
                "--tags",
                "code_gen",
                "--name",
                "Scheduled while watching",
            )
            expect(rows.filter(has_text="late-arrival")).to_have_count(1, timeout=10_000)
            expect(page.locator("#total-workflows")).to_have_text(str(JOBS + 2 + LATE))
            page.screenshot(path=str(ROOT / "docs" / "dashboard.png"), full_page=True)

            # The event table is in the DAG's order (HEIGHT descending, then CID), not by arrival.
            order = events.evaluate_all(
                "rows => rows.map(r => [Number(r.cells[0].textContent),"
                " r.cells[4].querySelector('a').getAttribute('href')])"
            )
            assert len(order) >= JOBS + 2
            assert order == sorted(order, key=lambda row: (-row[0], row[1])), order

            # Every CID links to its block, shown as DAG-JSON whose links are links again.
            events.filter(has_text="late-arrival").first.locator("a.cid").first.click()
            expect(page.locator("h1")).to_contain_text("block")
            dag = page.locator("pre.dagjson")
            expect(dag).to_contain_text('"kind": "schedule"')
            expect(dag).to_contain_text('"bytes"')
            dag.locator("a.cid").first.click()
            expect(page.locator("pre.dagjson")).to_contain_text('"type": "workflow"')
            missing = page.goto(url + "block/bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua")
            assert missing is not None and missing.status == 404
            expect(page.locator("body")).to_contain_text("not in this replica")
        finally:
            browser.close()

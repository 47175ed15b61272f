"""The trajectory viewer: its HTTP API, `rlm view`, and the page in headless Chromium checked for
what a person would see. Screenshots go to ``test-artifacts/`` at the repository root (or
``$RLM_TEST_ARTIFACTS``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _browser import Browser, find_chromium
from _trajectories import run_completion
from test_store import REFERENCE_LOG

from rlm_plugins.store.db import Database
from rlm_plugins.store.sink import StoreSink
from rlm_plugins.viewer.server import Viewer, make_server

ARTIFACTS = Path(os.environ.get("RLM_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts")


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


@pytest.fixture
def served(tmp_path: Path):
    """A store with one finished run (3 llm sub-calls, one child run), served on a free port."""
    db_path = tmp_path / "logs.db"
    _, sink = run_completion(db_path, n_llm=3)
    viewer = Viewer(Database(db_path), label=str(db_path))
    server = make_server(viewer, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", sink.run_ids[0], db_path
    server.shutdown()
    server.server_close()


# --- the API ---------------------------------------------------------------------------------------


def test_api_and_static_assets(served):
    base, run_id, _ = served
    status, body, ctype = get(base + "/")
    assert status == 200 and b"rlm trajectories" in body and ctype.startswith("text/html")
    for name in ("app.js", "app.css", "highlight.js"):
        status, body, _ = get(f"{base}/static/{name}")
        assert status == 200 and len(body) > 500
    assert get(base + "/static/../../etc/passwd")[0] == 404
    runs = json.loads(get(base + "/api/runs")[1])["runs"]
    assert [r["id"] for r in runs] == [run_id]
    tree = json.loads(get(f"{base}/api/runs/{run_id[:5]}")[1])
    assert tree["id"] == run_id and len(tree["iterations"]) == 2
    stamp = json.loads(get(f"{base}/api/runs/{run_id}/stamp")[1])
    assert stamp["status"] == "completed" and stamp["runs"] == 2 and stamp["subcalls"] == 4
    status, body, _ = get(base + "/api/runs/doesnotexist")
    assert status == 404 and "rlm logs" in json.loads(body)["error"]
    req = urllib.request.Request(base + "/api/upload?name=ref.jsonl", method="POST",
                                 data="\n".join(json.dumps(r) for r in REFERENCE_LOG).encode())
    ids = json.loads(urllib.request.urlopen(req, timeout=10).read())["runs"]
    assert json.loads(get(f"{base}/api/runs/{ids[0]}")[1])["root_model"] == "gpt-5"
    assert [r["id"] for r in json.loads(get(base + "/api/runs")[1])["runs"]] == [run_id]  # logs untouched
    bad = urllib.request.Request(base + "/api/upload", method="POST", data=b"not json\n")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)
    assert err.value.code == 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rlm_view_command_serves_a_jsonl_file(tmp_path: Path):
    f = tmp_path / "ref.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in REFERENCE_LOG) + "\n")
    port = free_port()
    env = {**os.environ, "RLM_USER_DIR": str(tmp_path / "u")}
    proc = subprocess.Popen([sys.executable, "-m", "rlm", "view", str(f), "--port", str(port),
                             "--no-browser"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/#/run/" in line, line
        runs = json.loads(get(f"http://127.0.0.1:{port}/api/runs")[1])["runs"]
        assert runs[0]["root_model"] == "gpt-5"
        assert not (tmp_path / "u" / "logs.db").exists()  # viewing a file does not log it
        busy = subprocess.run([sys.executable, "-m", "rlm", "view", "--port", str(port), "--no-browser"],
                              capture_output=True, text=True, env=env, timeout=30)
        assert busy.returncode == 1 and "--port" in busy.stderr
    finally:
        proc.terminate()
        proc.wait(10)


# --- in the browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; scripts/ci/chromium.sh installs it")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    b = Browser(exe)
    yield b
    b.close()


def test_page_shows_runs_tree_search_and_addressed_node(browser: Browser, served):
    base, run_id, _ = served
    b = browser
    b.goto(base + "/")
    b.wait("document.querySelectorAll('#run-list .run-row').length === 1")
    row = b.text("#run-list .run-row")
    assert run_id in row and "completed" in row and "scripted" in row and "ROOT context with a needle" in row

    # Open the run: header, iterations, highlighted code, output, sub-calls collapsed.
    b.click("#run-list .run-row")
    b.wait("!document.querySelector('#run-view').hidden && document.querySelector('#tree .iteration')")
    header = b.text("#run-header")
    assert "ROOT context with a needle" in header and "sub-calls 4" in header and "child runs 1" in header
    assert b.js("document.querySelectorAll('#tree > .run > .node-body > .iteration').length") == 2
    assert b.js("document.querySelector('#tree .cell pre.code .tok-kw').textContent") == "if"
    assert "3 parts; done:CHILD" in b.text("#tree .cell pre.stdout")
    assert b.js("document.querySelectorAll('#tree .subcall').length") == 4
    assert "child sees CHILD" not in b.text("#tree")  # the child run is inside a collapsed sub-call
    assert b.js("document.querySelectorAll('#waterfall .wf-bar').length") >= 8

    # Expand the rlm sub-call: the child's own iterations, tokens and cost appear.
    b.click("#tree .subcall.rlm > .node-head")
    b.wait("document.querySelector('#tree .child-run')")
    child = b.text("#tree .child-run")
    assert "child run" in child and "2 iterations" in child and " in / " in child and "$" in child
    assert "child sees CHILD: find the needle" in child
    b.js("document.querySelector('#tree .child-run').scrollIntoView({block: 'center'})")
    assert b.screenshot(ARTIFACTS / "viewer-child-run.png").stat().st_size > 10_000

    # Search within the run finds text inside a collapsed llm sub-call and opens it.
    b.js("document.querySelector('#search').value = 'summarise part 2'; "
         "document.querySelector('#search').dispatchEvent(new Event('input'))")
    b.wait("document.querySelector('#search-count').textContent.indexOf('/') > 0")
    assert b.text("#search-count") == "1 / 1"
    focused = b.wait("document.querySelector('.node.focus') && document.querySelector('.node.focus').id")
    assert focused.startswith("sub-")
    assert "summarise part 2" in b.text(".node.focus")
    assert b.js("document.querySelectorAll('.node.focus mark').length") >= 1

    # A link addresses that node: loading it fresh expands and focuses exactly it.
    link = b.js("document.querySelector('.node.focus .node-link').getAttribute('href')")
    assert link == f"#/run/{run_id}/{focused}"
    b.goto(base + "/?fresh=1" + link)
    b.wait(f"document.querySelector('#{focused}.focus')")
    assert "summary of summarise part 2" in b.text(f"#{focused}")
    shot = b.screenshot(ARTIFACTS / "viewer-run.png")
    assert shot.stat().st_size > 10_000


def test_page_refreshes_a_running_run(browser: Browser, tmp_path: Path):
    db_path = tmp_path / "live.db"
    sink = StoreSink(db_path)
    done = threading.Event()

    def work():
        try:
            run_completion(db_path, n_llm=2, sink=sink, latency=0.4)
        finally:
            done.set()

    viewer = Viewer(Database(db_path), label="live")
    server = make_server(viewer, port=0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        deadline = time.time() + 10
        while not sink.run_ids and time.time() < deadline:
            time.sleep(0.02)
        run_id = sink.run_ids[0]
        browser.goto(f"{base}/#/run/{run_id}")
        browser.wait("document.querySelector('#run-header .status')")
        assert browser.text("#run-header .status") == "running"
        assert browser.js("!document.querySelector('#live').hidden")
        browser.wait("document.querySelector('#run-header .status').textContent === 'completed'", timeout=30)
        assert done.wait(10)
        assert browser.js("document.querySelector('#live').hidden")
        assert browser.js("document.querySelectorAll('#tree > .run > .node-body > .iteration').length") == 2
        assert "done:ROOT" in browser.text("#tree .final")
    finally:
        server.shutdown()
        server.server_close()


def test_page_opens_an_uploaded_reference_file(browser: Browser, served, tmp_path: Path):
    base, _, _ = served
    f = tmp_path / "reference.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in REFERENCE_LOG) + "\n")
    browser.goto(base + "/")
    browser.wait("document.querySelectorAll('#run-list .run-row').length === 1")
    browser.set_file("#file-input", str(f))
    browser.wait("document.querySelector('#run-header') && "
                 "document.querySelector('#run-header').innerText.indexOf('gpt-5') >= 0")
    assert "hello" in browser.text("#tree .final")
    assert "print(llm_query('hi'))" in browser.text("#tree .cell pre.code")


def test_a_run_that_hit_a_limit_is_not_shown_as_a_success(browser: Browser, tmp_path: Path):
    """A run that ran out of turns is listed with its status and a badge that is not green."""
    from rlm import RLM

    db_path = tmp_path / "logs.db"
    sink = StoreSink(db_path)
    with RLM(backend="scripted", backend_kwargs={"replies": ["```repl\nprint(1)\n```"] * 2},
             max_iterations=1, sinks=[sink]) as r:
        assert r.completion("never finishes").status.value == "max_iterations"
    viewer = Viewer(Database(db_path), label=str(db_path))
    server = make_server(viewer, port=0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        browser.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        browser.wait("document.querySelectorAll('#run-list .run-row').length === 1")
        assert "max_iterations" in browser.text("#run-list .run-row")
        colour = "getComputedStyle(document.querySelector('#run-list .status')).color"
        ok_colour = ("(function(){var s=document.createElement('span'); s.className='status completed';"
                     "document.body.appendChild(s); return getComputedStyle(s).color;})()")
        assert browser.js(colour) != browser.js(ok_colour)
    finally:
        server.shutdown()
        server.server_close()

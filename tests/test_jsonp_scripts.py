"""The produced scripts run: in node (a JavaScript engine) and in Chromium through a real <script> tag."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from flask.testing import FlaskClient

from tests.live import LiveServer
from tests.upstream_server import Reply, UpstreamServer

TRICKY = ('{"html":"</script><script>window.pwned=1</script><!--","amp":"a & b","seps":"x\u2028y\u2029z",'
          '"nums":[1.10,-0,1e2,12345678901234567890123],"nested":{"a":[{"b":null}]},"emoji":"🙂"}')

NODE_RUNNER = r"""
const vm = require('vm');
const scripts = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const results = scripts.map(({name, source}) => {
  const sandbox = {captured: undefined};
  // Build the dotted callback's objects, then call through it as a browser would.
  const parts = name.split('.');
  let target = sandbox;
  for (const part of parts.slice(0, -1)) { target = target[part] = {}; }
  target[parts[parts.length - 1]] = (data) => { sandbox.captured = JSON.stringify(data); };
  vm.runInNewContext(source, sandbox);
  return sandbox.captured === undefined ? null : JSON.parse(sandbox.captured);
});
process.stdout.write(JSON.stringify(results));
"""


def run_in_node(scripts: list[dict[str, str]]) -> list[object]:
    node = shutil.which("node")
    assert node, "node is needed to evaluate the JSONP scripts"
    result = subprocess.run([node, "-e", NODE_RUNNER], input=json.dumps(scripts), capture_output=True,
                            text=True, timeout=60, check=True)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_scripts_evaluate_in_node_to_the_upstream_data(client: FlaskClient, upstream: UpstreamServer) -> None:
    upstream.route("/tricky", Reply(200, TRICKY.encode()))
    names = ["cb", "jQuery37100123_1700000000000", "YUI.Env.JSONP.yui_3_18_1_1_17",
             "dojo.io.script.jsonp_dojoIoScript1._jsonpCallback", "__jp0"]
    scripts = [{"name": n, "source": client.get(f"/jsonp/api/tricky?callback={n}").get_data(as_text=True)}
               for n in names]
    envelope = client.get("/jsonp/api/tricky?callback=cb&envelope=1").get_data(as_text=True)
    results = run_in_node([*scripts, {"name": "cb", "source": envelope}])
    expected = json.loads(TRICKY, parse_int=float)  # JavaScript numbers are doubles
    for result in results[:-1]:
        assert result == expected
    last = results[-1]
    assert isinstance(last, dict) and last["status"] == 200 and last["ok"] is True
    assert last["data"] == expected


@pytest.mark.browser
def test_script_tag_in_chromium(page, page_origin: str, live_bridge: LiveServer,  # type: ignore[no-untyped-def]
                                upstream: UpstreamServer) -> None:
    upstream.route("/tricky", Reply(200, TRICKY.encode()))
    upstream.route("/missing", Reply(404, {"error": "nope"}))
    page.goto(page_origin + "/")
    outcome = page.evaluate("""base => {
        function load(src) {
          return new Promise(resolve => {
            const s = document.createElement('script');
            s.src = src;
            s.onload = () => resolve('load');
            s.onerror = () => resolve('error');
            document.head.appendChild(s);
          });
        }
        window.app = {got: []};
        window.app.cb = data => window.app.got.push(data);
        return Promise.all([
          load(base + '/jsonp/api/tricky?callback=app.cb'),
          load(base + '/jsonp/api/missing?callback=app.cb'),
          load(base + '/jsonp/api/missing?callback=app.cb&envelope=1'),
        ]).then(events => ({events, got: window.app.got, pwned: window.pwned === 1,
                            scripts: document.querySelectorAll('script').length}));
    }""", live_bridge.url)
    # A 404 script fires onerror and never runs, as jQuery's JSONP expects; the envelope always runs.
    assert outcome["events"] == ["load", "error", "load"]
    assert outcome["pwned"] is False
    # The scripts load in parallel, so the callbacks may run in any order.
    got = sorted(outcome["got"], key=lambda data: "status" in data)
    assert len(got) == 2
    assert got[0] == json.loads(TRICKY, parse_int=float)
    assert got[1]["status"] == 404 and got[1]["data"] == {"error": "nope"}


@pytest.mark.browser
def test_chromium_refuses_a_json_error_as_script(page, page_origin: str,  # type: ignore[no-untyped-def]
                                                 live_bridge: LiveServer, upstream: UpstreamServer) -> None:
    # An invalid callback gets JSON with nosniff: the browser will not run it as a script.
    page.goto(page_origin + "/")
    event = page.evaluate("""src => new Promise(resolve => {
        const s = document.createElement('script');
        s.src = src; s.onload = () => resolve('load'); s.onerror = () => resolve('error');
        document.head.appendChild(s);
    })""", live_bridge.url + "/jsonp/api/?callback=alert(1)")
    assert event == "error"
    assert upstream.count() == 0

"""Both official JPush Node SDKs from npm, unchanged, against Pigeon: `jpush-sdk` 3.5.0 and
`jpush-async` 4.2.0 (tests/node/jpush_sdks.js sends their jpush.cn requests to the server).
They push to everyone and to a tag, set and read a device's tags and alias, ask whether a
device is in a tag (jpush-async builds /v3/tags//{tag}/...), list tags, delete one and read a
report."""

import json
import os
import shutil
import subprocess

from conftest import ROOT

NODE_DIR = os.path.join(ROOT, "tests", "node")
SCRIPT = os.path.join(NODE_DIR, "jpush_sdks.js")


def test_official_node_sdks(server, app, devices):
    for pkg in ("jpush-sdk", "jpush-async"):
        assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", pkg)), \
            f"{pkg} is not installed: run scripts/test (npm ci in tests/node)"
    node = shutil.which("node")
    assert node, "node is not installed"
    d = devices()
    env = dict(os.environ, PIGEON_BASE=server.base, APP_KEY=app["app_key"],
               MASTER_SECRET=app["master_secret"], RID=d.registration_id)
    out = subprocess.run([node, SCRIPT], cwd=NODE_DIR, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    results = {r["sdk"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert set(results) == {"jpush-sdk", "jpush-async"}, out.stdout
    # jpush-async really sent the doubled slashes Pigeon now accepts.
    assert any("/v3/tags//" in p for p in results["jpush-async"]["requests"]), results
    # The device got both SDKs' pushes to all and to its tag.
    got = d.pushes(expect=4)
    msg_ids = {str(p["msg_id"]) for p in got}
    for r in results.values():
        assert {str(r["toAll"]["msg_id"]), str(r["toTag"]["msg_id"])} <= msg_ids, (got, r)

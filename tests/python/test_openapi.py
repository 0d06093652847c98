"""`/openapi.json` documents every route the server answers, and nothing it does not."""

import re

import requests


def test_openapi_lists_every_route_and_each_one_is_served(server, app):
    doc = requests.get(server.base + "/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "Pigeon"
    paths = doc["paths"]
    for must in ["/v3/push", "/v3/devices/{registration_id}", "/v3/schedules/{schedule_id}/msg_ids",
                 "/v3/received/detail", "/v3/grouppush", "/v1/devices/register", "/v1/connect", "/health"]:
        assert must in paths, must
    auth = (app["app_key"], app["master_secret"])
    count = 0
    for path, item in paths.items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method, op in item.items():
            assert op["summary"] and op["responses"]
            for p in op["parameters"]:
                if p["in"] == "path":
                    assert "{" + p["name"] + "}" in path
            if path == "/v1/connect":
                continue
            r = requests.request(method.upper(), server.base + concrete, auth=auth, data="{}", timeout=5)
            # Served: whatever the answer, it is not "no such route" or "wrong method".
            assert r.status_code not in (404, 405) or r.json()["error"]["code"] not in (404, 1001), \
                (method, path, r.status_code, r.text)
            assert r.headers["Content-Type"].startswith("application/json")
            count += 1
    assert count >= 28
    # Wrong methods are refused with the ones that work.
    r = requests.patch(server.base + "/v3/aliases/x", auth=auth, timeout=5)
    assert r.status_code == 405 and r.json()["error"]["message"] == "this API accepts only GET, POST, DELETE"

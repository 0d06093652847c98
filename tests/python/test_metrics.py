"""`GET /metrics` against the real binary, read with the Prometheus client's own parser of the
text format: every family is there with its type; connecting, pushing, acking, clicking and
recalling move the counters by exactly what happened; `metrics_listen` moves the endpoint to
a listener of its own; a Web Push endpoint (a local HTTP server standing in for a browser's
push service) moves the vendor counters."""

import http.server
import json
import os
import tempfile
import threading
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import Device, Server, free_port

# Family names as the parser gives them (a counter's family drops `_total`).
FAMILIES = {
    "pigeon_connections": "gauge",
    "pigeon_pushes_accepted": "counter",
    "pigeon_deliveries": "counter",
    "pigeon_undelivered": "counter",
    "pigeon_http_requests": "counter",
    "pigeon_http_request_duration_seconds": "histogram",
    "pigeon_callback_events_pending": "gauge",
    "pigeon_callback_batches": "counter",
    "pigeon_vendor_requests": "counter",
    "pigeon_storage_commit_duration_seconds": "histogram",
    "process_resident_memory_bytes": "gauge",
    "process_cpu_seconds": "counter",
    "process_open_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


class Scrape:
    """One scrape: family types, and every sample by name and labels."""

    def __init__(self, url):
        r = requests.get(url, timeout=5)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        self.types = {}
        self.samples = {}
        for family in text_string_to_metric_families(r.text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name, **labels):
        return self.samples.get((name, frozenset(labels.items())), 0.0)


def delta(before, after, name, **labels):
    return after.get(name, **labels) - before.get(name, **labels)


def wait_for(scrape, check, limit=5.0):
    deadline = time.time() + limit
    while True:
        s = scrape()
        if check(s) or time.time() > deadline:
            return s
        time.sleep(0.1)


def push(server, app, rids):
    body = {"platform": "all", "audience": {"registration_id": rids},
            "notification": {"alert": "metrics"}}
    r = requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                      auth=(app["app_key"], app["master_secret"]))
    assert r.status_code == 200, r.text
    return r.json()["msg_id"]


def test_counters_move_by_what_happened():
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"))
        server.start()
        try:
            app = server.create_app("metrics")
            scrape = lambda: Scrape(server.base + "/metrics")  # noqa: E731
            before = scrape()
            for name, kind in FAMILIES.items():
                assert before.types.get(name) == kind, (name, before.types.get(name))

            phone = Device(server, app["app_key"], platform="android")
            tablet = Device(server, app["app_key"], platform="ios")
            connected = scrape()
            assert delta(before, connected, "pigeon_connections", platform="android") == 1
            assert delta(before, connected, "pigeon_connections", platform="ios") == 1

            msg_id = push(server, app, [phone.registration_id, tablet.registration_id])
            assert [f["msg_id"] for f in phone.pushes(1)] == [msg_id]
            assert [f["msg_id"] for f in tablet.pushes(1)] == [msg_id]
            phone.ws.send(json.dumps({"op": "click", "msg_id": msg_id, "seq": 1}))
            assert json.loads(phone.ws.recv(timeout=5))["op"] == "ok"
            # A refused push: a 4xx on the same route.
            r = requests.post(server.base + "/v3/push", data="{", timeout=5,
                              auth=(app["app_key"], app["master_secret"]))
            assert r.status_code == 400, r.text

            after = wait_for(scrape, lambda s: delta(before, s, "pigeon_deliveries_total",
                                                     channel="pigeon", stage="delivered") >= 2)
            d = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
            assert d("pigeon_pushes_accepted_total", dialect="jpush") == 1
            assert d("pigeon_pushes_accepted_total", dialect="getui_v2") == 0
            assert d("pigeon_deliveries_total", channel="pigeon", stage="sent") == 2
            assert d("pigeon_deliveries_total", channel="pigeon", stage="delivered") == 2
            assert d("pigeon_deliveries_total", channel="pigeon", stage="clicked") == 1
            assert d("pigeon_deliveries_total", channel="apns", stage="sent") == 0
            assert d("pigeon_http_requests_total", route="/v3/push", status="2xx") == 1
            assert d("pigeon_http_requests_total", route="/v3/push", status="4xx") == 1
            assert d("pigeon_http_requests_total", route="/v1/devices/register", status="2xx") == 2
            assert d("pigeon_http_request_duration_seconds_count", route="/v3/push", status="2xx") == 1
            assert after.get("pigeon_http_request_duration_seconds_bucket",
                             route="/v3/push", status="2xx", le="+Inf") >= 1
            assert d("pigeon_storage_commit_duration_seconds_count") >= 1
            # Route templates, never raw paths: a path with an id in it counts under its route.
            requests.get(f"{server.base}/v3/received?msg_ids={msg_id}", timeout=5,
                         auth=(app["app_key"], app["master_secret"]))
            requests.get(server.base + "/no/such/path", timeout=5)
            templated = scrape()
            assert templated.get("pigeon_http_requests_total", route="unmatched", status="4xx") >= 1
            routes = {dict(labels)["route"] for (name, labels) in templated.samples
                      if name == "pigeon_http_requests_total"}
            assert not any(str(msg_id) in r or "no/such" in r for r in routes), routes

            # A recall: the device that never got the push is reported undelivered.
            tablet.close()
            gone = wait_for(scrape, lambda s: delta(before, s, "pigeon_connections", platform="ios") == 0)
            assert delta(before, gone, "pigeon_connections", platform="ios") == 0
            recalled = push(server, app, [phone.registration_id, tablet.registration_id])
            assert [f["msg_id"] for f in phone.pushes(1)] == [recalled]
            r = requests.delete(f"{server.base}/v3/push/{recalled}", timeout=5,
                                auth=(app["app_key"], app["master_secret"]))
            assert r.status_code == 200, r.text
            end = scrape()
            assert delta(before, end, "pigeon_undelivered_total", reason="recalled") == 1
            assert delta(before, end, "pigeon_pushes_accepted_total", dialect="jpush") == 2
            phone.close()
            end = wait_for(scrape, lambda s: delta(before, s, "pigeon_connections", platform="android") == 0)
            assert delta(before, end, "pigeon_connections", platform="android") == 0

            # The process metrics, plausible.
            assert 1e6 < end.get("process_resident_memory_bytes") < 8e9
            assert 0 < end.get("process_cpu_seconds_total") < 3600
            assert 3 <= end.get("process_open_fds") < 10_000
            assert abs(end.get("process_start_time_seconds") - time.time()) < 600
        finally:
            server.stop()


def test_metrics_listen_serves_them_there_only():
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = Server(os.path.join(tmp, "data"), env={"PIGEON_METRICS_LISTEN": f"127.0.0.1:{port}"})
        server.start()
        try:
            r = requests.get(server.base + "/metrics", timeout=5)
            assert r.status_code == 404 and r.json()["error"]["code"] == 404, r.text
            s = Scrape(f"http://127.0.0.1:{port}/metrics")
            assert s.types["pigeon_connections"] == "gauge"
            # The main listener's requests are counted; the 404 above under `unmatched`.
            assert s.get("pigeon_http_requests_total", route="unmatched", status="4xx") == 1
            assert s.get("pigeon_http_requests_total", route="/health", status="2xx") >= 1
            # Only /metrics there.
            r = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
            assert r.status_code == 404
        finally:
            server.stop()


# A P-256 public key and auth secret of a subscription (RFC 8291 Appendix A's user agent).
P256DH = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
AUTH = "BTBZMqHH6r4Tts7J_aSIgg"


class PushService:
    """A stand-in for a browser's push service: takes (201) every message to /ok/..., answers
    410 (the subscription is gone) to /gone/..."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(201 if self.path.startswith("/ok/") else 410)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_vendor_outcomes_are_counted():
    service = PushService()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"), env={"PIGEON_WEBPUSH_ALLOW_PRIVATE_NETWORKS": "true"})
        server.start()
        try:
            app = server.create_app("web")
            before = Scrape(server.base + "/metrics")
            rids = []
            for path in ["/ok/1", "/gone/2"]:
                body = {"app_key": app["app_key"], "platform": "web",
                        "push_tokens": {"webpush": {"endpoint": service.base + path,
                                                    "keys": {"p256dh": P256DH, "auth": AUTH}}}}
                r = requests.post(server.base + "/v1/devices/register", json=body, timeout=5)
                assert r.status_code == 200, r.text
                rids.append(r.json()["registration_id"])
            push(server, app, rids)
            # The two sends are independent: either outcome may be counted first.
            after = wait_for(lambda: Scrape(server.base + "/metrics"),
                             lambda s: all(delta(before, s, "pigeon_vendor_requests_total",
                                                 vendor="webpush", result=result) >= 1
                                           for result in ("ok", "dead_token")), limit=10)
            d = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
            assert d("pigeon_vendor_requests_total", vendor="webpush", result="ok") == 1
            assert d("pigeon_vendor_requests_total", vendor="webpush", result="dead_token") == 1
            assert d("pigeon_vendor_requests_total", vendor="webpush", result="rejected") == 0
            assert d("pigeon_deliveries_total", channel="webpush", stage="sent") == 1
            assert d("pigeon_deliveries_total", channel="pigeon", stage="sent") == 0
        finally:
            server.stop()
            service.close()

//! The device protocol v1 (device-protocol.md) against the real server over real sockets.

mod common;

use common::{to_rids, within, Server};
use futures_util::{SinkExt, StreamExt};
use pigeon_device::{DeviceConnection, DeviceError, Frame, RegisterRequest};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(server: &Server) -> Ws {
    tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("ws connect")
        .0
}

/// Reads until a close frame; returns its code. Text frames before it are returned too.
async fn close_code(ws: &mut Ws) -> (u16, Vec<Value>) {
    let mut texts = Vec::new();
    loop {
        match within(30, ws.next()).await {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), texts),
            Some(Ok(Message::Close(None))) | None => return (1005, texts),
            Some(Ok(Message::Text(t))) => {
                texts.push(serde_json::from_str(t.as_str()).expect("json"))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket error before close: {e}"),
        }
    }
}

async fn expect_closed(conn: &mut DeviceConnection) -> u16 {
    loop {
        match within(30, conn.next_frame()).await {
            Err(DeviceError::Closed { code, .. }) => return code,
            Err(e) => panic!("expected a close, got {e}"),
            Ok(_) => {}
        }
    }
}

async fn next_other(conn: &mut DeviceConnection) -> Value {
    match within(10, conn.next_frame()).await.expect("frame") {
        Frame::Other(v) => v,
        Frame::Push(p) => panic!("unexpected push {p:?}"),
    }
}

fn reg(app: &common::App, extra: Value) -> Value {
    let mut v = json!({"app_key": app.key, "platform": "android"});
    for (k, val) in extra.as_object().expect("object") {
        v[k] = val.clone();
    }
    v
}

async fn post_register(server: &Server, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/devices/register", server.base))
        .json(&body)
        .send()
        .await
        .expect("register");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test]
async fn registration_is_idempotent_per_install_and_checks_its_input() {
    let server = Server::start().await;
    let app = server.create_app("a");
    let body = reg(
        &app,
        json!({"install_id": "install-0123456789", "tags": ["t1"]}),
    );
    let (s1, first) = post_register(&server, body.clone()).await;
    let (s2, second) = post_register(&server, body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first["registration_id"], second["registration_id"]);
    assert_ne!(first["device_secret"], second["device_secret"]);

    // The old secret stopped working.
    let old = pigeon_device::Credentials {
        registration_id: first["registration_id"].as_str().unwrap().into(),
        device_secret: first["device_secret"].as_str().unwrap().into(),
    };
    let err = DeviceConnection::connect(&server.base, &old)
        .await
        .err()
        .expect("old secret refused");
    assert!(
        matches!(err, DeviceError::Protocol(ref m) if m.contains("1004")),
        "{err}"
    );

    // Update with registration_id + device_secret: tags change, identity stays.
    let update = json!({"app_key": app.key, "registration_id": second["registration_id"],
                        "device_secret": second["device_secret"], "tags": ["t2"]});
    let (s, v) = post_register(&server, update.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["registration_id"], second["registration_id"]);
    let mut wrong = update;
    wrong["device_secret"] = json!("nope");
    let (s, v) = post_register(&server, wrong).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (401, Some(1004)));

    let cases = [
        (
            json!({"app_key": "AAAAAAAAAAAAAAAAAAAAAAAA", "platform": "android"}),
            401,
            1008,
        ),
        (reg(&app, json!({"platform": "symbian"})), 400, 1003),
        (reg(&app, json!({"install_id": "short"})), 400, 1003),
        (reg(&app, json!({"tags": ["x".repeat(41)]})), 400, 1003),
        (reg(&app, json!({"alias": "has space"})), 400, 1003),
        (reg(&app, json!({"mobile": "call me"})), 400, 1003),
        (reg(&app, json!({"model": "m".repeat(65)})), 400, 1003),
        (reg(&app, json!({"push_tokens": {"nokia": "x"}})), 400, 1003),
        (reg(&app, json!({"registration_id": "abc"})), 400, 1003),
        (json!({"platform": "android"}), 400, 1003),
    ];
    for (body, status, code) in cases {
        let (s, v) = post_register(&server, body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_i64()),
            (status, Some(code)),
            "for {body}: {v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let r = reqwest::Client::new()
        .post(format!("{}/v1/devices/register", server.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], 1003);
}

#[tokio::test]
async fn hello_rules_and_credentials() {
    let server = Server::start().await;
    let app = server.create_app("a");
    let creds = server.register(&app, "ios", &[], None).await;

    // No hello in time (the test server allows 1 s).
    let mut ws = raw(&server).await;
    assert_eq!(close_code(&mut ws).await.0, 4000);

    // Another frame before hello.
    let mut ws = raw(&server).await;
    ws.send(Message::text(r#"{"op":"ping"}"#)).await.unwrap();
    assert_eq!(close_code(&mut ws).await.0, 4000);

    // Bad credentials: an error frame with 1004, then 4001.
    let mut ws = raw(&server).await;
    let hello =
        json!({"op": "hello", "registration_id": creds.registration_id, "device_secret": "wrong"});
    ws.send(Message::text(hello.to_string())).await.unwrap();
    let (code, texts) = close_code(&mut ws).await;
    assert_eq!(code, 4001);
    assert_eq!(texts[0]["op"], "error");
    assert_eq!(texts[0]["code"], 1004);

    // Good credentials: welcome.
    let conn = server.connect(&creds).await;
    assert!(conn.welcome.heartbeat_s >= 5);
    assert_eq!(conn.welcome.pending, 0);
    assert!(conn.welcome.server_time_ms > 1_600_000_000_000);
}

/// A message may come in fragments (RFC 6455 §5.4): the server joins them; a continuation
/// with no first fragment, or a new message inside a fragmented one, is a protocol error.
#[tokio::test]
async fn fragmented_messages_are_joined_and_bad_fragments_close_with_1002() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let server = Server::start().await;
    let app = server.create_app("a");
    let creds = server.register(&app, "android", &[], None).await;
    let frame = |op: Data, fin: bool, payload: &[u8]| {
        Message::Frame(Frame::message(payload.to_vec(), OpCode::Data(op), fin))
    };

    let hello = json!({"op": "hello", "registration_id": creds.registration_id,
                       "device_secret": creds.device_secret})
    .to_string();
    let (a, rest) = hello.as_bytes().split_at(10);
    let (b, c) = rest.split_at(20);
    let mut ws = raw(&server).await;
    ws.send(frame(Data::Text, false, a)).await.unwrap();
    ws.send(frame(Data::Continue, false, b)).await.unwrap();
    ws.send(frame(Data::Continue, true, c)).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(t))) => assert!(t.as_str().contains("welcome"), "{t}"),
        other => panic!("expected welcome, got {other:?}"),
    }
    drop(ws);

    let mut ws = raw(&server).await;
    ws.send(frame(Data::Continue, true, b"{}")).await.unwrap();
    assert_eq!(close_code(&mut ws).await.0, 1002);

    let mut ws = raw(&server).await;
    ws.send(frame(Data::Text, false, a)).await.unwrap();
    ws.send(frame(Data::Text, true, b"{}")).await.unwrap();
    assert_eq!(close_code(&mut ws).await.0, 1002);
}

#[tokio::test]
async fn a_newer_connection_replaces_the_older() {
    let server = Server::start().await;
    let app = server.create_app("a");
    let creds = server.register(&app, "android", &[], None).await;
    let mut old = server.connect(&creds).await;
    let mut new = server.connect(&creds).await;
    assert_eq!(expect_closed(&mut old).await, 4002);
    let msg_id = server
        .push_ok(&app, to_rids(&[&creds.registration_id], "after replace"))
        .await;
    let p = within(10, new.next_push()).await.unwrap();
    assert_eq!(p.msg_id, msg_id);
}

#[tokio::test]
async fn bad_frames_unknown_ops_ping_and_device_ops() {
    let server = Server::start().await;
    let app = server.create_app("a");
    let creds = server.register(&app, "android", &[], None).await;
    let mut conn = server.connect(&creds).await;

    conn.send(json!({"op": "ping"})).await.unwrap();
    assert_eq!(next_other(&mut conn).await, json!({"op": "pong"}));

    conn.send(json!({"no_op": 1})).await.unwrap();
    let e = next_other(&mut conn).await;
    assert_eq!(
        (e["op"].as_str(), e["code"].as_i64()),
        (Some("error"), Some(1003))
    );

    conn.send(json!({"op": "teleport", "seq": 5}))
        .await
        .unwrap();
    assert_eq!(
        next_other(&mut conn).await,
        json!({"op": "error", "seq": 5, "code": 1009, "reason": "unknown op \"teleport\""})
    );
    conn.send(json!({"op": "teleport"})).await.unwrap(); // ignored: no answer

    conn.send(json!({"op": "set_tags", "tags": ["news", "sport"], "seq": 6}))
        .await
        .unwrap();
    assert_eq!(next_other(&mut conn).await, json!({"op": "ok", "seq": 6}));
    conn.send(json!({"op": "set_alias", "alias": "carol", "seq": 7}))
        .await
        .unwrap();
    assert_eq!(next_other(&mut conn).await, json!({"op": "ok", "seq": 7}));
    conn.send(json!({"op": "set_tags", "tags": ["bad tag"], "seq": 8}))
        .await
        .unwrap();
    let e = next_other(&mut conn).await;
    assert_eq!(
        (e["seq"].as_i64(), e["code"].as_i64()),
        (Some(8), Some(1003))
    );
    conn.send(json!({"op": "location", "lat": 31.2, "lon": 121.5, "accuracy_m": 10.0, "seq": 9}))
        .await
        .unwrap();
    assert_eq!(next_other(&mut conn).await, json!({"op": "ok", "seq": 9}));
    conn.send(json!({"op": "location", "lat": 131.2, "lon": 0, "seq": 10}))
        .await
        .unwrap();
    assert_eq!(next_other(&mut conn).await["code"], 1003);

    // The new alias and tags are what pushes select on now.
    let by_alias = json!({"platform": "all", "audience": {"alias": ["carol"], "tag_and": ["news", "sport"]},
                          "notification": {"alert": "x"}});
    let msg_id = server.push_ok(&app, by_alias).await;
    let p = within(10, conn.next_push()).await.unwrap();
    assert_eq!(p.msg_id, msg_id);
    conn.send(json!({"op": "click", "msg_id": msg_id, "seq": 11}))
        .await
        .unwrap();
    assert_eq!(next_other(&mut conn).await, json!({"op": "ok", "seq": 11}));

    // Ten bad frames in a row close the connection with 4003.
    for _ in 0..10 {
        conn.send(json!(["not", "an", "object"])).await.unwrap();
    }
    assert_eq!(expect_closed(&mut conn).await, 4003);
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let server = Server::start().await;
    let app = server.create_app("a");
    let creds = server.register(&app, "android", &[], None).await;
    let mut conn = server.connect(&creds).await;
    let big = json!({"op": "set_alias", "alias": "x".repeat(17 * 1024)});
    let _ = conn.send(big).await;
    assert_eq!(expect_closed(&mut conn).await, 1009);
}

#[tokio::test]
async fn silent_devices_time_out_with_4004() {
    let server = Server::start_with(&[("PIGEON_HEARTBEAT_S", "5")]).await;
    let app = server.create_app("a");
    let creds = server.register(&app, "android", &[], None).await;
    let mut conn = server.connect(&creds).await;
    assert_eq!(conn.welcome.heartbeat_s, 5);
    let started = std::time::Instant::now();
    assert_eq!(expect_closed(&mut conn).await, 4004);
    let waited = started.elapsed().as_secs_f64();
    assert!(
        (9.0..14.0).contains(&waited),
        "closed after {waited} s, expected about 10"
    );
}

#[tokio::test]
async fn offline_pushes_arrive_oldest_first_and_unacked_ones_come_again() {
    let server = Server::start().await;
    let app = server.create_app("a");
    let creds = server.register(&app, "android", &[], None).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            server
                .push_ok(&app, to_rids(&[&creds.registration_id], &format!("n{i}")))
                .await,
        );
    }
    let mut conn = server.connect(&creds).await;
    assert_eq!(conn.welcome.pending, 3);
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = within(10, conn.next_push()).await.unwrap();
        assert_eq!(
            p.notification.as_ref().unwrap()["alert"],
            json!(format!("n{}", got.len()))
        );
        got.push(p.msg_id);
    }
    assert_eq!(got, ids);
    // Ack only the first; the other two come again on the next connection.
    conn.ack(&[&ids[0]]).await.unwrap();
    conn.send(json!({"op": "ping", "seq": 1})).await.unwrap();
    let _ = next_other(&mut conn).await; // the ack was processed before this answer
    conn.close().await.unwrap();
    let mut conn = server.connect(&creds).await;
    assert_eq!(conn.welcome.pending, 2);
    let a = within(10, conn.next_push()).await.unwrap();
    let b = within(10, conn.next_push()).await.unwrap();
    assert_eq!(
        [a.msg_id.clone(), b.msg_id.clone()],
        [ids[1].clone(), ids[2].clone()]
    );
    conn.ack(&[&a.msg_id, &b.msg_id]).await.unwrap();
    conn.send(json!({"op": "ping", "seq": 2})).await.unwrap();
    let _ = next_other(&mut conn).await;
    conn.close().await.unwrap();
    let conn = server.connect(&creds).await;
    assert_eq!(conn.welcome.pending, 0);
}

#[tokio::test]
async fn at_most_64_pushes_are_outstanding() {
    let server = Server::start().await;
    let app = server.create_app("a");
    let creds = server.register(&app, "android", &[], None).await;
    for i in 0..100 {
        server
            .push_ok(&app, to_rids(&[&creds.registration_id], &format!("n{i}")))
            .await;
    }
    let mut conn = server.connect(&creds).await;
    assert_eq!(conn.welcome.pending, 100);
    let mut first = Vec::new();
    for _ in 0..64 {
        first.push(within(10, conn.next_push()).await.unwrap().msg_id);
    }
    // Nothing more until acks arrive.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), conn.next_push())
            .await
            .is_err()
    );
    let refs: Vec<&str> = first.iter().map(String::as_str).collect();
    conn.ack(&refs).await.unwrap();
    let mut rest = Vec::new();
    for _ in 0..36 {
        rest.push(within(10, conn.next_push()).await.unwrap().msg_id);
    }
    assert!(rest.iter().all(|m| !first.contains(m)));
    // A live push while the window has room goes straight out.
    let live = server
        .push_ok(&app, to_rids(&[&creds.registration_id], "live"))
        .await;
    assert_eq!(within(10, conn.next_push()).await.unwrap().msg_id, live);
}

#[tokio::test]
async fn time_to_live_zero_reaches_only_online_devices_and_ttl_expires() {
    let server = Server::start().await;
    let app = server.create_app("a");
    let online = server.register(&app, "android", &["g"], None).await;
    let offline = server.register(&app, "android", &["g"], None).await;
    let mut conn = server.connect(&online).await;
    let body = json!({"platform": "all", "audience": {"tag": ["g"]}, "message": {"msg_content": "now"},
                      "options": {"time_to_live": 0}});
    let msg_id = server.push_ok(&app, body).await;
    let p = within(10, conn.next_push()).await.unwrap();
    assert_eq!(
        (p.msg_id.as_str(), p.sent_ms),
        (msg_id.as_str(), p.expires_ms)
    );
    let late = server.connect(&offline).await;
    assert_eq!(late.welcome.pending, 0);
    late.close().await.unwrap();

    let body = json!({"platform": "all", "audience": {"registration_id": [offline.registration_id]},
                      "message": {"msg_content": "short"}, "options": {"time_to_live": 1}});
    server.push_ok(&app, body).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let late = server.connect(&offline).await;
    assert_eq!(late.welcome.pending, 0);
}

#[tokio::test]
async fn accepted_pushes_survive_kill_9() {
    let mut server = Server::start().await;
    let app = server.create_app("a");
    let online = server.register(&app, "android", &["k"], None).await;
    let offline = server.register(&app, "ios", &["k"], None).await;
    let mut conn = server.connect(&online).await;
    let body = json!({"platform": "all", "audience": {"tag": ["k"]}, "notification": {"alert": "durable"}});
    let msg_id = server.push_ok(&app, body).await;
    // The online device receives it but dies before acking; the server is killed at once.
    assert_eq!(within(10, conn.next_push()).await.unwrap().msg_id, msg_id);
    server.kill9();
    drop(conn);
    server.restart().await;
    for creds in [&online, &offline] {
        let mut conn = server.connect(creds).await;
        assert_eq!(conn.welcome.pending, 1);
        let p = within(10, conn.next_push()).await.unwrap();
        assert_eq!(p.msg_id, msg_id);
        assert_eq!(p.notification.unwrap()["alert"], "durable");
    }
    // msg_ids keep growing after a restart.
    let next = server
        .push_ok(&app, to_rids(&[&online.registration_id], "after"))
        .await;
    assert!(next.parse::<u64>().unwrap() > msg_id.parse::<u64>().unwrap());
}

#[tokio::test]
async fn sigterm_closes_devices_with_1001_and_keeps_everything() {
    let mut server = Server::start().await;
    let app = server.create_app("a");
    let creds = server.register(&app, "android", &[], None).await;
    let mut conn = server.connect(&creds).await;
    let msg_id = server
        .push_ok(&app, to_rids(&[&creds.registration_id], "before stop"))
        .await;
    assert_eq!(within(10, conn.next_push()).await.unwrap().msg_id, msg_id);
    assert!(server.terminate(), "pigeon serve did not exit 0 on SIGTERM");
    assert_eq!(expect_closed(&mut conn).await, 1001);
    server.restart().await;
    let mut conn = server.connect(&creds).await;
    assert_eq!(within(10, conn.next_push()).await.unwrap().msg_id, msg_id);
}

#[tokio::test]
async fn apps_cannot_reach_each_other() {
    let server = Server::start().await;
    let a = server.create_app("a");
    let b = server.create_app("b");
    let dev_a = server
        .register(&a, "android", &["shared"], Some("same"))
        .await;
    let dev_b = server
        .register(&b, "android", &["shared"], Some("same"))
        .await;
    let mut conn_a = server.connect(&dev_a).await;
    let mut conn_b = server.connect(&dev_b).await;

    let (status, v) = server
        .push(&b, to_rids(&[&dev_a.registration_id], "intrusion"))
        .await;
    assert_eq!((status, v["error"]["code"].as_i64()), (400, Some(1011)));
    let body = json!({"platform": "all", "audience": {"tag": ["shared"], "alias": ["same"]}, "notification": {"alert": "b only"}});
    let msg_id = server.push_ok(&b, body).await;
    assert_eq!(within(10, conn_b.next_push()).await.unwrap().msg_id, msg_id);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), conn_a.next_push())
            .await
            .is_err()
    );

    // A's credentials do not work for B's registration endpoint identity either.
    let req = RegisterRequest {
        app_key: b.key.clone(),
        ..Default::default()
    };
    let update = json!({"app_key": req.app_key, "registration_id": dev_a.registration_id, "device_secret": dev_a.device_secret});
    let (s, v) = post_register(&server, update).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (401, Some(1004)));
}

#[tokio::test]
async fn an_app_created_while_serving_works_at_once() {
    let server = Server::start().await;
    let late = server.create_app("created after start");
    let creds = server.register(&late, "web", &[], None).await;
    let mut conn = server.connect(&creds).await;
    let body = json!({"platform": "all", "audience": "all",
                      "notification": {"alert": "hi", "web": {"title": "T", "url": "https://example.test/"}}});
    let msg_id = server.push_ok(&late, body).await;
    let p = within(10, conn.next_push()).await.unwrap();
    assert_eq!(p.msg_id, msg_id);
    assert_eq!(
        Value::Object(p.notification.unwrap()),
        json!({"alert": "hi", "title": "T", "url": "https://example.test/"})
    );
}

/// The fan-out writes push frames straight to a device's socket; when the socket is full it
/// leaves the rest of a frame to the connection's task and queues what follows. A device
/// that stops reading while pushes come, with a tiny receive buffer so that the server's
/// writes stop part-way through frames, must later read every push whole, once each, in the
/// order they were accepted.
#[tokio::test]
async fn a_device_that_stops_reading_gets_every_frame_whole_and_in_order() {
    let server = Server::start().await;
    let app = server.create_app("slow-reader");
    let creds = server.register(&app, "android", &[], None).await;
    let addr: std::net::SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    socket.set_nonblocking(true).expect("nonblocking");
    let tcp = tokio::net::TcpStream::from_std(socket.into()).expect("tokio stream");
    let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url(), tcp)
        .await
        .expect("upgrade");
    let hello = json!({"op": "hello", "registration_id": creds.registration_id,
                       "device_secret": creds.device_secret});
    ws.send(Message::text(hello.to_string()))
        .await
        .expect("hello");
    match within(10, ws.next()).await {
        Some(Ok(Message::Text(t))) => assert!(t.as_str().contains("welcome"), "{t}"),
        other => panic!("expected welcome, got {other:?}"),
    }
    // Not reading from here on: 64 pushes (the window) of ~3.9 KB each fill both socket
    // buffers.
    let filler = "x".repeat(3900);
    let mut accepted = Vec::new();
    for i in 0..64 {
        let body = json!({"platform": "all",
                          "audience": {"registration_id": [creds.registration_id]},
                          "message": {"msg_content": format!("{i}:{filler}")}});
        accepted.push(server.push_ok(&app, body).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut got = Vec::new();
    while got.len() < accepted.len() {
        match within(20, ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("a whole JSON frame");
                assert_eq!(v["op"], "push", "{v}");
                let i = got.len();
                assert_eq!(v["message"]["msg_content"], format!("{i}:{filler}"));
                got.push(v["msg_id"].as_str().expect("msg_id").to_string());
            }
            other => panic!("expected a push, got {other:?}"),
        }
    }
    assert_eq!(got, accepted, "every push once, in order");
    let ack = json!({"op": "ack", "msg_ids": got});
    ws.send(Message::text(ack.to_string())).await.expect("ack");
    // The window is free again, and the next push comes straight away.
    let last = server
        .push_ok(&app, to_rids(&[&creds.registration_id], "after"))
        .await;
    match within(10, ws.next()).await {
        Some(Ok(Message::Text(t))) => {
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            assert_eq!(v["msg_id"], last.as_str(), "{v}");
        }
        other => panic!("expected the last push, got {other:?}"),
    }
}

//! The command line: app management on a data directory, and the device simulator as the
//! README's quick start uses it.

mod common;

use common::{Server, BIN};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn pigeon(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run pigeon")
}

/// `pigeon device simulate` against `server` with these extra arguments, once it says its
/// devices are connected; with the rest of its stderr, still to be read.
fn simulator(
    server: &Server,
    app_key: &str,
    args: &[&str],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStderr>>,
) {
    let mut sim = Command::new(BIN)
        .args([
            "device",
            "simulate",
            "--server",
            &server.base,
            "--app-key",
            app_key,
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(sim.stderr.take().unwrap()).lines();
    for line in stderr.by_ref() {
        if line.unwrap().contains("devices connected") {
            break;
        }
    }
    (sim, stderr)
}

/// The simulator's output: one JSON object per push a device printed.
fn printed(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Which devices printed `msg_id`, in order.
fn devices_that_got(lines: &[Value], msg_id: &str) -> Vec<i64> {
    let mut devices: Vec<i64> = lines
        .iter()
        .filter(|l| l["msg_id"] == msg_id)
        .map(|l| l["device"].as_i64().unwrap())
        .collect();
    devices.sort();
    devices
}

#[test]
fn app_create_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let key = "AbCdEfGhIjKlMnOpQrStUv12";
    let secret = "SecretSecretSecretSecre1";
    let out = pigeon(&[
        "app",
        "create",
        "--name",
        "given",
        "--app-key",
        key,
        "--master-secret",
        secret,
        "--data",
        data,
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!({"app_key": key, "master_secret": secret}));

    let out = pigeon(&[
        "app",
        "create",
        "--name",
        "again",
        "--app-key",
        key,
        "--data",
        data,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = pigeon(&[
        "app",
        "create",
        "--name",
        "bad",
        "--app-key",
        "short",
        "--data",
        data,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("24 characters"));

    let out = pigeon(&["app", "create", "--name", "generated", "--data", data]);
    let generated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let k = generated["app_key"].as_str().unwrap();
    assert!(k.len() == 24 && k.bytes().all(|b| b.is_ascii_alphanumeric()));

    let out = pigeon(&["app", "list", "--data", data]);
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["given", "generated"]);
}

#[tokio::test]
async fn two_servers_cannot_share_a_data_directory() {
    let server = Server::start().await;
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&server.data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already using"));
}

#[tokio::test]
async fn simulated_devices_print_what_they_receive() {
    let server = Server::start().await;
    let app = server.create_app("sim");
    let (sim, _stderr) = simulator(
        &server,
        &app.key,
        &[
            "--count",
            "3",
            "--alias-prefix",
            "user",
            "--tags",
            "vip",
            "--exit-after",
            "4",
        ],
    );
    let one = server
        .push_ok(&app, json!({"platform": "all", "audience": {"alias": ["user1"]},
                              "notification": {"alert": "Hello from Pigeon", "android": {"title": "Hi"}}}))
        .await;
    let all = server
        .push_ok(&app, json!({"platform": "all", "audience": {"tag": ["vip"]}, "message": {"msg_content": "m"}}))
        .await;
    let out = tokio::task::spawn_blocking(move || sim.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    let lines = printed(&out.stdout);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let to_one: Vec<&Value> = lines.iter().filter(|l| l["msg_id"] == one).collect();
    assert_eq!(to_one.len(), 1);
    assert_eq!(to_one[0]["device"], 1);
    assert_eq!(
        to_one[0]["notification"],
        json!({"alert": "Hello from Pigeon", "title": "Hi"})
    );
    assert_eq!(devices_that_got(&lines, &all), [0, 1, 2]);
}

#[tokio::test]
async fn simulated_devices_reconnect_after_a_server_restart() {
    // A short heartbeat: after 1001 a device waits a random 0 to heartbeat_s seconds.
    let mut server = Server::start_with(&[("PIGEON_HEARTBEAT_S", "5")]).await;
    let app = server.create_app("sim");
    let (sim, stderr) = simulator(
        &server,
        &app.key,
        &["--count", "2", "--alias-prefix", "r", "--exit-after", "3"],
    );
    // Keep reading stderr so the simulator never blocks on a full pipe.
    let errors = std::thread::spawn(move || stderr.map_while(Result::ok).collect::<Vec<_>>());
    let before = server
        .push_ok(
            &app,
            json!({"platform": "all", "audience": {"alias": ["r0"]},
                              "notification": {"alert": "before"}}),
        )
        .await;
    // Let it arrive before the restart.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(server.terminate(), "pigeon serve did not stop cleanly");
    server.restart().await;
    let after = server
        .push_ok(
            &app,
            json!({"platform": "all", "audience": {"alias": ["r0", "r1"]},
                              "notification": {"alert": "after"}}),
        )
        .await;
    let pid = sim.id().to_string();
    let Ok(out) = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::task::spawn_blocking(move || sim.wait_with_output().unwrap()),
    )
    .await
    else {
        let _ = Command::new("kill").arg(&pid).status();
        panic!("the simulator did not get the push sent after the restart");
    };
    let out = out.unwrap();
    let errors = errors.join().unwrap();
    assert!(out.status.success(), "{errors:?}");
    let lines = printed(&out.stdout);
    assert_eq!(
        devices_that_got(&lines, &before),
        [0],
        "{lines:?} {errors:?}"
    );
    assert_eq!(
        devices_that_got(&lines, &after),
        [0, 1],
        "{lines:?} {errors:?}"
    );
    assert!(
        errors.iter().filter(|e| e.contains("reconnected")).count() >= 2,
        "{errors:?}"
    );
}

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
    let mut sim = Command::new(BIN)
        .args([
            "device",
            "simulate",
            "--server",
            &server.base,
            "--app-key",
            &app.key,
            "--count",
            "3",
            "--alias-prefix",
            "user",
            "--tags",
            "vip",
            "--exit-after",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(sim.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains("devices connected") {
            break;
        }
    }
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
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let to_one: Vec<&Value> = lines.iter().filter(|l| l["msg_id"] == one).collect();
    assert_eq!(to_one.len(), 1);
    assert_eq!(to_one[0]["device"], 1);
    assert_eq!(
        to_one[0]["notification"],
        json!({"alert": "Hello from Pigeon", "title": "Hi"})
    );
    let mut devices: Vec<i64> = lines
        .iter()
        .filter(|l| l["msg_id"] == all)
        .map(|l| l["device"].as_i64().unwrap())
        .collect();
    devices.sort();
    assert_eq!(devices, [0, 1, 2]);
}

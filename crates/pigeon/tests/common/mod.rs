//! Test harness: the real `pigeon` binary on a free loopback port and a temporary data
//! directory, talked to over real sockets.

#![allow(dead_code)]

use pigeon_device::{register, Credentials, DeviceConnection, RegisterRequest};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pigeon");

pub struct App {
    pub key: String,
    pub secret: String,
}

pub struct Server {
    pub base: String,
    pub port: u16,
    pub data: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Creates an app through the CLI on a data directory.
pub fn create_app(data: &Path, name: &str) -> App {
    let out = Command::new(BIN)
        .args(["app", "create", "--name", name, "--data"])
        .arg(data)
        .output()
        .expect("run pigeon app create");
    assert!(
        out.status.success(),
        "app create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("app create prints JSON");
    App {
        key: v["app_key"].as_str().expect("app_key").to_string(),
        secret: v["master_secret"]
            .as_str()
            .expect("master_secret")
            .to_string(),
    }
}

impl Server {
    /// Starts a server on a fresh data directory with short test timeouts.
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !env.iter().any(|(k, _)| k == "PIGEON_HELLO_TIMEOUT_MS") {
            env.push(("PIGEON_HELLO_TIMEOUT_MS".into(), "1000".into()));
        }
        env.push(("PIGEON_SQLITE_SYNCHRONOUS".into(), "normal".into()));
        let port = free_port();
        let mut s = Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            data: dir.path().join("data"),
            child: None,
            env,
            _dir: Some(dir),
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--data",
            ])
            .arg(&self.data)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pigeon serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "pigeon serve did not come up on {}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn create_app(&self, name: &str) -> App {
        create_app(&self.data, name)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
    }

    /// SIGTERM, and waits for the process to exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        // SAFETY: sending a signal to our own child process.
        unsafe { libc_kill(c.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    pub async fn push(&self, app: &App, body: Value) -> (u16, Value) {
        self.post(app, "/v3/push", body).await
    }

    pub async fn post(&self, app: &App, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}{}", self.base, path))
            .basic_auth(&app.key, Some(&app.secret))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON answer"))
    }

    pub async fn delete(&self, app: &App, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .delete(format!("{}{}", self.base, path))
            .basic_auth(&app.key, Some(&app.secret))
            .send()
            .await
            .expect("DELETE");
        let status = r.status().as_u16();
        let text = r.text().await.expect("answer");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Pushes and returns the msg_id, asserting success.
    pub async fn push_ok(&self, app: &App, body: Value) -> String {
        let (status, v) = self.push(app, body).await;
        assert_eq!(status, 200, "push failed: {v}");
        v["msg_id"].as_str().expect("msg_id").to_string()
    }

    pub async fn register(
        &self,
        app: &App,
        platform: &str,
        tags: &[&str],
        alias: Option<&str>,
    ) -> Credentials {
        let req = RegisterRequest {
            app_key: app.key.clone(),
            platform: Some(platform.into()),
            tags: Some(tags.iter().map(|t| t.to_string()).collect()),
            alias: alias.map(String::from),
            ..Default::default()
        };
        register(&reqwest::Client::new(), &self.base, &req)
            .await
            .expect("register")
    }

    pub async fn connect(&self, creds: &Credentials) -> DeviceConnection {
        DeviceConnection::connect(&self.base, creds)
            .await
            .expect("connect")
    }

    pub fn ws_url(&self) -> String {
        pigeon_device::connect_url(&self.base)
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A simple push to some registration ids.
pub fn to_rids(rids: &[&str], alert: &str) -> Value {
    serde_json::json!({"platform": "all", "audience": {"registration_id": rids},
                       "notification": {"alert": alert}})
}

/// Waits at most `secs` for a future.
pub async fn within<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("timed out")
}

/// The data rows of the table (as the benches print them) whose first column is headed
/// `first`.
pub fn table_rows(out: &str, first: &str) -> Vec<Vec<String>> {
    let cells = |l: &str| -> Vec<String> {
        l.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = out.lines().skip_while(|l| {
        !(l.starts_with('|') && cells(l).first().map(String::as_str) == Some(first))
    });
    assert!(
        lines.next().is_some(),
        "no table headed {first:?} in:\n{out}"
    );
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(cells)
        .collect()
}

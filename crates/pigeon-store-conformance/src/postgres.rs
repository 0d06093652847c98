//! A PostgreSQL for tests, and a fresh database for each test.
//!
//! [`TestPostgres::get`] gives the server of this test binary, started on first use:
//!
//! - if `PIGEON_TEST_POSTGRES_URL` is set (a superuser's URL, `postgres://user:pw@host:port/db`),
//!   that server;
//! - otherwise a private one: `initdb` and `postgres` are looked for on `PATH`, then under
//!   `/usr/lib/postgresql/*/bin` (the newest first); the cluster lives in a new directory
//!   under the system's temporary directory, listens on a free port of 127.0.0.1 only, with
//!   its Unix socket inside that directory and durability off (fsync, synchronous commit:
//!   nothing here must survive a crash). PostgreSQL refuses to run as root, so as root
//!   `initdb` runs as the `postgres` user through `runuser -u postgres --`, and the server is
//!   started as that user too (its uid and gid set in the child before `exec`, so that the
//!   postmaster is this process's own child).
//!
//! The private server never outlives the test binary: an `atexit` handler stops it (SIGQUIT,
//! PostgreSQL's immediate shutdown), waits for it and removes its directory when the binary
//! exits, and the postmaster is started with a parent-death signal (SIGQUIT) in case the
//! binary dies without exiting (killed). The parent-death signal follows the thread that
//! started the child, so the server is started from a thread of its own that lives as long
//! as the process.
//!
//! When no PostgreSQL can be found or started, [`TestPostgres::get`] panics with what is
//! missing: tests that need PostgreSQL fail, they are never skipped.
//!
//! [`TestPostgres::create_database`] makes a new, empty database for one test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable naming an existing server to use instead of a private one.
pub const URL_VAR: &str = "PIGEON_TEST_POSTGRES_URL";

/// The PostgreSQL server of this test binary.
#[derive(Debug)]
pub struct TestPostgres {
    /// A superuser's URL of the server's `postgres` database (or the URL given).
    admin_url: url::Url,
    /// Whether it is this binary's own server (dropped whole at exit).
    private: bool,
}

/// One test's database.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL, as a superuser.
    pub url: String,
    /// Its name.
    pub name: String,
    server: &'static TestPostgres,
}

static SERVER: OnceLock<Result<TestPostgres, String>> = OnceLock::new();
/// The private server, for the exit handler.
static PRIVATE: OnceLock<Private> = OnceLock::new();
static DATABASES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Private {
    pid: libc::pid_t,
    dir: PathBuf,
}

impl TestPostgres {
    /// The server of this test binary, started on first use. Panics, saying what is missing,
    /// if there is none and none can be started.
    pub fn get() -> &'static TestPostgres {
        match SERVER.get_or_init(|| match std::env::var(URL_VAR) {
            Ok(url) if !url.trim().is_empty() => given(url.trim()),
            _ => start_private(),
        }) {
            Ok(server) => server,
            Err(why) => panic!("no PostgreSQL for the tests: {why}"),
        }
    }

    /// Whether this is a private server started by this test binary.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// A superuser's URL of the server's maintenance database.
    pub fn admin_url(&self) -> &str {
        self.admin_url.as_str()
    }

    /// A new, empty database, named after this process and a counter.
    pub async fn create_database(&'static self) -> TestDatabase {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("pigeon_test_{}_{n}_{nanos}", std::process::id());
        self.execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{name}"));
        TestDatabase {
            url: url.to_string(),
            name,
            server: self,
        }
    }

    /// Runs one statement on the maintenance database.
    async fn execute(&self, sql: &str) -> Result<(), String> {
        let (client, connection) =
            tokio_postgres::connect(self.admin_url.as_str(), tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("connecting to {}: {e}", redacted(&self.admin_url)))?;
        let driver = tokio::spawn(connection);
        let result = client.batch_execute(sql).await.map_err(|e| e.to_string());
        drop(client);
        let _ = driver.await;
        result
    }
}

impl TestDatabase {
    /// Drops the database (connections still open to it are ended).
    pub async fn drop_database(self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = self.server.execute(&sql).await {
            panic!("dropping database {}: {e}", self.name);
        }
    }
}

/// The URL without its password, for messages.
fn redacted(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// A server given by URL.
fn given(text: &str) -> Result<TestPostgres, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{URL_VAR} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "{URL_VAR} must be a postgres:// URL, not {}",
            url.scheme()
        ));
    }
    Ok(TestPostgres {
        admin_url: url,
        private: false,
    })
}

/// Where a PostgreSQL program is: on PATH, else the newest /usr/lib/postgresql/*/bin.
fn find_program(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((version, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    on_path
        .into_iter()
        .chain(versions.into_iter().map(|(_, bin)| bin))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The uid and gid of the `postgres` user.
fn postgres_user() -> Option<(libc::uid_t, libc::gid_t)> {
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: not null, points to a valid passwd record.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

fn chown(path: &Path, (uid, gid): (libc::uid_t, libc::gid_t)) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {} to postgres: {e}", path.display()))
}

/// The last lines of a log, for messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Starts this binary's own server.
fn start_private() -> Result<TestPostgres, String> {
    let initdb = find_program("initdb").ok_or(
        "initdb was not found on PATH nor under /usr/lib/postgresql/*/bin: install PostgreSQL's \
         server (Debian: apt-get install postgresql) or set PIGEON_TEST_POSTGRES_URL",
    )?;
    // The server of the same installation as initdb, if there is one beside it.
    let postgres = std::fs::canonicalize(&initdb)
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("postgres")))
        .filter(|p| is_executable(p))
        .or_else(|| find_program("postgres"))
        .ok_or(
            "the postgres server program was not found beside initdb, on PATH nor under \
             /usr/lib/postgresql/*/bin: install PostgreSQL's server or set PIGEON_TEST_POSTGRES_URL",
        )?;
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let user = if as_root {
        Some(postgres_user().ok_or(
            "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` \
             user to run it as (useradd --system postgres)",
        )?)
    } else {
        None
    };

    remove_stale_dirs();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let cleanup = |e: String| {
        let _ = std::fs::remove_dir_all(&dir);
        e
    };
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    if let Some(user) = user {
        chown(&dir, user).map_err(cleanup)?;
    }

    // initdb, as the postgres user when root.
    let mut init = if as_root {
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| is_executable(p))
            .or_else(|| find_program("runuser"))
            .ok_or_else(|| cleanup("running as root and runuser was not found".into()))?;
        let mut c = Command::new(runuser);
        c.args(["-u", "postgres", "--"]).arg(&initdb);
        c
    } else {
        Command::new(&initdb)
    };
    let out = init
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| cleanup(format!("running {}: {e}", initdb.display())))?;
    if !out.status.success() {
        return Err(cleanup(format!(
            "{} failed ({}): {}{}",
            initdb.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }

    // The server, from a thread that lives as long as the process (see the module doc).
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port().map_err(&cleanup)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let paths = (postgres.clone(), data.clone(), dir.clone(), log.clone());
        std::thread::Builder::new()
            .name("pigeon-test-postgres".into())
            .spawn(move || {
                let (postgres, data, dir, log) = paths;
                let started = spawn_server(&postgres, &data, &dir, &log, port, user);
                let ok = started.is_ok();
                let _ = tx.send(started);
                if ok {
                    loop {
                        std::thread::park();
                    }
                }
            })
            .map_err(|e| cleanup(format!("starting a thread: {e}")))?;
        match rx.recv() {
            Ok(Ok(pid)) => {
                let _ = PRIVATE.set(Private {
                    pid,
                    dir: dir.clone(),
                });
                // SAFETY: registering a plain extern "C" function.
                unsafe { libc::atexit(stop_private) };
                let admin_url =
                    url::Url::parse(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
                        .map_err(|e| e.to_string())?;
                return Ok(TestPostgres {
                    admin_url,
                    private: true,
                });
            }
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = "the thread starting the server died".into(),
        }
    }
    Err(cleanup(last_error))
}

/// What the private servers' directories are called: `{DIR_PREFIX}{pid}-{nanos}`.
const DIR_PREFIX: &str = "pigeon-test-pg-";

/// Removes the directories of private servers whose test binary is gone without exiting
/// (killed: its server went with it, the directory stayed).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A port of 127.0.0.1 nothing listens on now.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("finding a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Starts the postmaster and waits until it accepts connections; its pid.
fn spawn_server(
    postgres: &Path,
    data: &Path,
    dir: &Path,
    log: &Path,
    port: u16,
    user: Option<(libc::uid_t, libc::gid_t)>,
) -> Result<libc::pid_t, String> {
    use std::os::unix::process::CommandExt;
    let log_file =
        std::fs::File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let mut cmd = Command::new(postgres);
    cmd.arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=400",
            "-c",
            "shared_buffers=64MB",
            "-c",
            "log_min_messages=warning",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err));
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: prctl and getppid are async-signal-safe.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            // Runs after the uid change (which would clear it): SIGQUIT when this thread ends.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The parent died before the signal was set.
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", postgres.display()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} exited ({status}) on port {port}:\n{}",
                postgres.display(),
                tail(log)
            ));
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("ready to accept connections") {
            let pid = child.id() as libc::pid_t;
            // Reaped by the exit handler; the Child is forgotten (dropping it does nothing).
            std::mem::forget(child);
            return Ok(pid);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} did not accept connections within 60 s:\n{}",
                postgres.display(),
                tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// At exit: stops the private server, waits for it, removes its directory.
extern "C" fn stop_private() {
    let Some(private) = PRIVATE.get() else {
        return;
    };
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(private.pid, libc::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = 0;
        loop {
            let r = libc::waitpid(private.pid, &mut status, libc::WNOHANG);
            if r != 0 {
                break; // reaped, or not ours to wait for
            }
            if Instant::now() > deadline {
                libc::kill(private.pid, libc::SIGKILL);
                libc::waitpid(private.pid, &mut status, 0);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = std::fs::remove_dir_all(&private.dir);
}

//! `pigeon bench fanout`: broadcast fan-out and idle connection cost, Pigeon and Mosquitto
//! side by side. N devices (MQTT clients) connected from agent processes; one push to all
//! (one QoS-1 publish); time from the request to the last device receiving (and acking) it.

use crate::mqtt;
use crate::procs::{
    cpu_ns, now_us, require, rss_kib, split, wait_port, Agent, Guard, PigeonServer,
};
use crate::table::{median, Table};
use anyhow::{bail, Context};
use base64::Engine as _;
use clap::Args;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a server is left alone before its memory is read: longer than `pigeon serve`'s
/// 5 s heap trim, so RSS shows live memory rather than freed buffers it has not returned yet.
const SETTLE: Duration = Duration::from_secs(6);

#[derive(Args, Debug)]
pub struct FanoutArgs {
    /// Device counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "5000,10000,19500")]
    pub counts: Vec<usize>,
    /// Broadcasts per count; the table shows the median.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Agent processes holding the device connections.
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
    /// Skip the Mosquitto comparison.
    #[arg(long)]
    pub no_mosquitto: bool,
}

/// What one system did at one N.
pub struct Outcome {
    pub n: usize,
    pub memory: Idle,
    /// Milliseconds from the request to the last device, one per round.
    pub rounds_ms: Vec<f64>,
    /// CPU µs per delivery spent by the server and by the agents, one pair per round.
    pub rounds_cpu: Vec<(f64, f64)>,
    /// When the first broadcast was requested (µs since the epoch).
    pub first_start_us: u64,
    /// When the last device got the last broadcast (µs since the epoch).
    pub last_end_us: u64,
    /// The broadcasts fired at once after the paced rounds, if asked for: when the first
    /// was requested and when the last device got the last one (µs since the epoch).
    pub burst: Option<(u64, u64)>,
}

impl Outcome {
    fn new(n: usize, memory: Idle) -> Outcome {
        Outcome {
            n,
            memory,
            rounds_ms: Vec::new(),
            rounds_cpu: Vec::new(),
            first_start_us: 0,
            last_end_us: 0,
            burst: None,
        }
    }

    /// What one more idle connection costs: the RSS the later half of the agents' connections
    /// added, divided by their number (see [`connect_measured`]).
    pub fn per_connection_bytes(&self) -> f64 {
        let steps = &self.memory.steps;
        let half = steps.len() / 2;
        let from = match half {
            0 => self.memory.before_kib,
            h => steps[h - 1].1,
        };
        let to = steps.last().map_or(from, |s| s.1);
        bytes_each(from, to, steps[half..].iter().map(|s| s.0).sum())
    }
    /// Bytes per connection of each agent's connections, in the order they connected.
    pub fn step_bytes(&self) -> Vec<f64> {
        let mut last = self.memory.before_kib;
        self.memory
            .steps
            .iter()
            .map(|&(n, kib)| {
                let b = bytes_each(last, kib, n);
                last = kib;
                b.round()
            })
            .collect()
    }
    /// The RSS all N connections added, divided by N: memory the server freed before they
    /// came (registrations, for one) and kept, it reuses for them, which this does not see.
    pub fn whole_per_connection_bytes(&self) -> f64 {
        let m = &self.memory;
        let after = m.steps.last().map_or(m.before_kib, |s| s.1);
        bytes_each(m.before_kib, after, self.n)
    }
    pub fn median_ms(&self) -> f64 {
        median(self.rounds_ms.iter().copied())
    }
    /// Median CPU µs per delivery: (server, agents).
    pub fn median_cpu(&self) -> (f64, f64) {
        (
            median(self.rounds_cpu.iter().map(|c| c.0)),
            median(self.rounds_cpu.iter().map(|c| c.1)),
        )
    }
    pub fn deliveries_per_s(&self) -> f64 {
        self.n as f64 / (self.median_ms() / 1000.0)
    }
}

pub fn run(args: FanoutArgs) -> anyhow::Result<()> {
    if !args.no_mosquitto {
        require("mosquitto", "mosquitto")?;
    }
    let mut table = Table::new(&[
        "N",
        "pigeon ms",
        "pigeon deliv/s",
        "mosquitto ms",
        "mosquitto deliv/s",
        "ratio",
        "pigeon B/conn",
        "mosquitto B/conn",
        "CPU µs/deliv pigeon (server+agents)",
        "CPU µs/deliv mosquitto (server+agents)",
    ]);
    for &n in &args.counts {
        eprintln!("== N = {n}: pigeon");
        let p = pigeon(n, args.agents, args.rounds)?;
        eprintln!(
            "   rounds ms: {:?}; CPU µs/delivery (server, agents): {:?}; idle {:.0} B/conn \
             (later half; all N: {:.0}; by agent: {:?})",
            p.rounds_ms,
            p.rounds_cpu,
            p.per_connection_bytes(),
            p.whole_per_connection_bytes(),
            p.step_bytes()
        );
        let m = if args.no_mosquitto {
            None
        } else {
            eprintln!("== N = {n}: mosquitto");
            let m = mosquitto(n, args.agents, args.rounds)?;
            eprintln!(
                "   rounds ms: {:?}; CPU µs/delivery (server, agents): {:?}; idle {:.0} B/conn \
                 (later half; all N: {:.0}; by agent: {:?})",
                m.rounds_ms,
                m.rounds_cpu,
                m.per_connection_bytes(),
                m.whole_per_connection_bytes(),
                m.step_bytes()
            );
            Some(m)
        };
        table.row(vec![
            n.to_string(),
            format!("{:.1}", p.median_ms()),
            format!("{:.0}", p.deliveries_per_s()),
            m.as_ref()
                .map(|m| format!("{:.1}", m.median_ms()))
                .unwrap_or_default(),
            m.as_ref()
                .map(|m| format!("{:.0}", m.deliveries_per_s()))
                .unwrap_or_default(),
            m.as_ref()
                .map(|m| format!("{:.2}x", p.deliveries_per_s() / m.deliveries_per_s()))
                .unwrap_or_default(),
            format!("{:.0}", p.per_connection_bytes()),
            m.as_ref()
                .map(|m| format!("{:.0}", m.per_connection_bytes()))
                .unwrap_or_default(),
            cpu_cell(p.median_cpu()),
            m.as_ref()
                .map(|m| cpu_cell(m.median_cpu()))
                .unwrap_or_default(),
        ]);
    }
    table.print();
    Ok(())
}

fn cpu_cell((server, agents): (f64, f64)) -> String {
    format!("{server:.1}+{agents:.1}")
}

fn spawn_agents(
    n: usize,
    agents: usize,
    extra: impl Fn(usize) -> Vec<String>,
) -> anyhow::Result<Vec<(usize, Agent)>> {
    split(n, agents.max(1))
        .into_iter()
        .enumerate()
        .map(|(i, count)| {
            let mut a = vec![
                "--count".to_string(),
                count.to_string(),
                "--source-ip".into(),
                format!("127.0.0.{}", 10 + i),
                "--id".into(),
                i.to_string(),
            ];
            a.extend(extra(i));
            Ok((count, Agent::spawn(&a)?))
        })
        .collect()
}

/// What the RSS grew by from `from_kib` to `to_kib`, in bytes per connection of `n`.
fn bytes_each(from_kib: u64, to_kib: u64, n: usize) -> f64 {
    (to_kib.saturating_sub(from_kib) * 1024) as f64 / n.max(1) as f64
}

/// A server's RSS before the devices connect and after each agent's devices have.
pub struct Idle {
    pub before_kib: u64,
    /// (connections of one agent, RSS once they had connected), in the order they connected.
    pub steps: Vec<(usize, u64)>,
}

/// Connects the agents' devices one agent after the other, reading `pid`'s RSS before and
/// after each, each after [`SETTLE`]. An allocator keeps memory a server freed (the
/// registrations' buffers) and hands it to the first connections; the later ones have to take
/// new memory, so their share is what a connection costs.
fn connect_measured(agents: &mut [(usize, Agent)], pid: u32) -> anyhow::Result<Idle> {
    std::thread::sleep(SETTLE);
    let before_kib = rss_kib(pid)?;
    let mut steps = Vec::with_capacity(agents.len());
    for i in 0..agents.len() {
        connect_all(&mut agents[i..=i])?;
        std::thread::sleep(SETTLE);
        steps.push((agents[i].0, rss_kib(pid)?));
    }
    Ok(Idle { before_kib, steps })
}

fn connect_all(agents: &mut [(usize, Agent)]) -> anyhow::Result<()> {
    for (_, a) in agents.iter_mut() {
        a.send("connect")?;
    }
    for (count, a) in agents.iter_mut() {
        let v = a.recv()?;
        if v["connected"].as_u64() != Some(*count as u64) {
            bail!("agent connected {v} of {count}");
        }
    }
    Ok(())
}

/// One broadcast round: arms every agent, calls `fire` (which returns its start time), and
/// records ms from that start to the last device, and the CPU the server and the agents
/// spent until then.
fn round(
    outcome: &mut Outcome,
    server_pid: u32,
    agents: &mut [(usize, Agent)],
    fire: &mut dyn FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<()> {
    let n = outcome.n;
    for (_, a) in agents.iter_mut() {
        a.send("reset")?;
        a.recv()?;
    }
    for (count, a) in agents.iter_mut() {
        a.send(&format!("wait {count} 60"))?;
    }
    let agents_cpu =
        |agents: &[(usize, Agent)]| -> u64 { agents.iter().map(|(_, a)| cpu_ns(a.pid())).sum() };
    let (server_before, agents_before) = (cpu_ns(server_pid), agents_cpu(agents));
    let t0 = fire()?;
    if outcome.first_start_us == 0 {
        outcome.first_start_us = t0;
    }
    let mut last = 0;
    let mut received = 0;
    for (_, a) in agents.iter_mut() {
        let v = a.recv()?;
        received += v["received"].as_u64().unwrap_or(0);
        last = last.max(v["last_us"].as_u64().unwrap_or(0));
    }
    let per_delivery_us = |ns: u64| ns as f64 / 1000.0 / n as f64;
    let cpu = (
        per_delivery_us(cpu_ns(server_pid).saturating_sub(server_before)),
        per_delivery_us(agents_cpu(agents).saturating_sub(agents_before)),
    );
    if received != n as u64 {
        bail!("only {received} of {n} devices got the broadcast");
    }
    outcome.last_end_us = outcome.last_end_us.max(last);
    outcome
        .rounds_ms
        .push(last.saturating_sub(t0) as f64 / 1000.0);
    outcome.rounds_cpu.push(cpu);
    Ok(())
}

/// Fires `count` broadcasts one after another without waiting for the devices, then waits
/// until every device got all of them; returns (first request, last device) in µs.
fn burst(
    n: usize,
    count: usize,
    agents: &mut [(usize, Agent)],
    fire: &mut dyn FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<(u64, u64)> {
    for (_, a) in agents.iter_mut() {
        a.send("reset")?;
        a.recv()?;
    }
    for (devices, a) in agents.iter_mut() {
        a.send(&format!("wait {} 120", *devices * count))?;
    }
    let mut first = 0;
    for _ in 0..count {
        let t0 = fire()?;
        if first == 0 {
            first = t0;
        }
    }
    let (mut last, mut received) = (0, 0);
    for (_, a) in agents.iter_mut() {
        let v = a.recv()?;
        received += v["received"].as_u64().unwrap_or(0);
        last = last.max(v["last_us"].as_u64().unwrap_or(0));
    }
    if received != (n * count) as u64 {
        bail!("only {received} of {} deliveries of the burst", n * count);
    }
    Ok((first, last))
}

fn pigeon(n: usize, agents: usize, rounds: usize) -> anyhow::Result<Outcome> {
    pigeon_with(n, agents, rounds, &[], &|_| Ok(()), &|_| Ok(()))
}

/// [`pigeon`] with extra server environment, a setup step run on the fresh server and a
/// step run after the broadcasts, while the server still runs.
pub fn pigeon_with(
    n: usize,
    agents: usize,
    rounds: usize,
    env: &[(&str, &str)],
    setup: &dyn Fn(&PigeonServer) -> anyhow::Result<()>,
    after: &dyn Fn(&Outcome) -> anyhow::Result<()>,
) -> anyhow::Result<Outcome> {
    pigeon_then_burst(n, agents, rounds, env, setup, after, None)
}

/// A step run on a bench's outcome while its server still runs.
pub type Step<'a> = dyn Fn(&Outcome) -> anyhow::Result<()> + 'a;

/// [`pigeon_with`], then, if `after_burst` is given, the same number of broadcasts fired at
/// once (recorded in [`Outcome::burst`]) and `after_burst`.
pub fn pigeon_then_burst(
    n: usize,
    agents: usize,
    rounds: usize,
    env: &[(&str, &str)],
    setup: &dyn Fn(&PigeonServer) -> anyhow::Result<()>,
    after: &dyn Fn(&Outcome) -> anyhow::Result<()>,
    after_burst: Option<&Step<'_>>,
) -> anyhow::Result<Outcome> {
    let cap = crate::cluster::max_connections_for(n).to_string();
    let mut all_env = vec![
        ("PIGEON_HEARTBEAT_S", "600"),
        ("PIGEON_MAX_CONNECTIONS", cap.as_str()),
    ];
    all_env.extend_from_slice(env);
    let server = PigeonServer::start(&all_env)?;
    setup(&server)?;
    let pid = server.guard.pid();
    let (base, key) = (server.base.clone(), server.app_key.clone());
    let mut agents = spawn_agents(n, agents, |_| {
        vec![
            "--mode".into(),
            "pigeon".into(),
            "--server".into(),
            base.clone(),
            "--app-key".into(),
            key.clone(),
        ]
    })?;
    for (_, a) in agents.iter_mut() {
        a.recv()?; // registered
    }
    let memory = connect_measured(&mut agents, pid)?;
    let port: u16 = server.base.rsplit(':').next().unwrap_or_default().parse()?;
    let auth = basic_auth(&server);
    let mut outcome = Outcome::new(n, memory);
    for _ in 0..rounds {
        let mut fire = || broadcast(port, &auth);
        round(&mut outcome, pid, &mut agents, &mut fire)?;
        std::thread::sleep(Duration::from_millis(300));
    }
    after(&outcome)?;
    if let Some(after_burst) = after_burst {
        std::thread::sleep(Duration::from_secs(2));
        let mut fire = || broadcast(port, &auth);
        outcome.burst = Some(burst(n, rounds, &mut agents, &mut fire)?);
        after_burst(&outcome)?;
    }
    for (_, a) in agents.iter_mut() {
        let _ = a.send("quit");
    }
    Ok(outcome)
}

/// The Basic credentials of a bench server's app, base64-encoded.
pub fn basic_auth(server: &PigeonServer) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", server.app_key, server.master_secret))
}

/// One push to `all` through `POST /v3/push` on its own connection; returns when the request
/// was written (µs since the epoch), after the server accepted it.
pub fn broadcast(port: u16, auth: &str) -> anyhow::Result<u64> {
    let body = format!(
        r#"{{"platform":"all","audience":"all","notification":{{"alert":"bench","android":{{"extras":{{"t":{}}}}}}}}}"#,
        now_us()
    );
    let request = format!(
        "POST /v3/push HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let t0 = now_us();
    s.write_all(request.as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    if !answer.starts_with("HTTP/1.1 200") {
        bail!("push refused: {answer}");
    }
    Ok(t0)
}

fn mosquitto(n: usize, agents: usize, rounds: usize) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let port = crate::procs::free_port()?;
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nmax_inflight_messages 64\nlog_dest stderr\nlog_type error\n"),
    )?;
    let bin = if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    };
    let guard = Guard(
        Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()
            .context("starting mosquitto")?,
    );
    wait_port(port, Duration::from_secs(10))?;
    let server = format!("127.0.0.1:{port}");
    let mut agents = spawn_agents(n, agents, |_| {
        vec![
            "--mode".into(),
            "mqtt".into(),
            "--server".into(),
            server.clone(),
        ]
    })?;
    let memory = connect_measured(&mut agents, guard.pid())?;

    let mut publisher = TcpStream::connect(("127.0.0.1", port))?;
    publisher.set_nodelay(true)?;
    publisher.write_all(&mqtt::connect("bench-publisher", 600))?;
    let mut connack = [0u8; 4];
    publisher.read_exact(&mut connack)?;
    let mut outcome = Outcome::new(n, memory);
    for r in 0..rounds {
        let mut fire = || -> anyhow::Result<u64> {
            let t0 = now_us();
            publisher.write_all(&mqtt::publish_qos1(
                r as u16 + 1,
                "bench",
                t0.to_string().as_bytes(),
            ))?;
            Ok(t0)
        };
        round(&mut outcome, guard.pid(), &mut agents, &mut fire)?;
        let mut puback = [0u8; 4];
        publisher.read_exact(&mut puback)?;
        std::thread::sleep(Duration::from_millis(300));
    }
    for (_, a) in agents.iter_mut() {
        let _ = a.send("quit");
    }
    drop(guard);
    Ok(outcome)
}

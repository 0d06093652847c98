//! Pigeon's metrics: every metric name, its help text, its label names and the label values
//! it may take, in one place ([`ALL`]); the handles the hot paths record through, registered
//! once and kept in a static (recording is an atomic add, no lookup by name, no allocation);
//! the recorder and the Prometheus text format of `GET /metrics` ([`render`]), with the
//! process metrics read from `/proc`.
//!
//! Label values are bounded by construction: enums here, the platforms and vendors listed
//! here, route templates (at most [`MAX_ROUTES`]) and status classes. Never an app key, a
//! msg_id or a raw path.
//!
//! Must not know: HTTP (the server mounts [`render`] where it wants), storage, the engine,
//! any dialect beyond the name of the door a push came in through.
//!
//! [`install`] must run before the first handle is used: handles taken before it record
//! nowhere (that is what tests and CLI commands that never call it get, at no cost).

mod process;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

/// What a metric is, in Prometheus's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, what it is, what it counts and its label names.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

pub const CONNECTIONS: Metric = Metric {
    name: "pigeon_connections",
    kind: Kind::Gauge,
    help: "Devices connected to this node over Pigeon's WebSocket, by the platform they registered as.",
    labels: &["platform"],
};
pub const PUSHES_ACCEPTED: Metric = Metric {
    name: "pigeon_pushes_accepted_total",
    kind: Kind::Counter,
    help: "Pushes accepted (stored and answered with a msg_id), by the door that accepted them.",
    labels: &["dialect"],
};
pub const DELIVERIES: Metric = Metric {
    name: "pigeon_deliveries_total",
    kind: Kind::Counter,
    help: "Devices a push reached, by channel (pigeon: Pigeon's own connection, else the vendor) \
           and stage (sent: written to the connection or taken by the vendor; delivered: acked by \
           the device; clicked: the device reported a click).",
    labels: &["channel", "stage"],
};
pub const UNDELIVERED: Metric = Metric {
    name: "pigeon_undelivered_total",
    kind: Kind::Counter,
    help: "Devices a push will never reach (Push.Undelivered ErrCode 1-5), by reason; counted \
           whether or not the app has a callback endpoint.",
    labels: &["reason"],
};
pub const HTTP_REQUESTS: Metric = Metric {
    name: "pigeon_http_requests_total",
    kind: Kind::Counter,
    help: "HTTP requests answered, by route template (unmatched: no route) and status class.",
    labels: &["route", "status"],
};
pub const HTTP_DURATION: Metric = Metric {
    name: "pigeon_http_request_duration_seconds",
    kind: Kind::Histogram,
    help: "Time from a request's head to its answer's head, by route template and status class.",
    labels: &["route", "status"],
};
pub const CALLBACK_PENDING: Metric = Metric {
    name: "pigeon_callback_events_pending",
    kind: Kind::Gauge,
    help: "Callback events the dispatcher holds that no receiver has taken yet: those in \
           batches waiting for a retry, and those it found waiting for their batch to fill \
           (read at most 5,000 per endpoint and command at a time).",
    labels: &[],
};
pub const CALLBACK_BATCHES: Metric = Metric {
    name: "pigeon_callback_batches_total",
    kind: Kind::Counter,
    help: "Callback batches posted, by result (ok: taken; retry: failed, tried again later; \
           dead_letter: failed and given up).",
    labels: &["result"],
};
pub const VENDOR_REQUESTS: Metric = Metric {
    name: "pigeon_vendor_requests_total",
    kind: Kind::Counter,
    help: "Devices sent to a vendor's push service, by vendor and outcome (ok, dead_token, \
           retry, rejected; error: the vendor could not be asked, e.g. no usable credentials).",
    labels: &["vendor", "result"],
};
pub const STORAGE_COMMIT: Metric = Metric {
    name: "pigeon_storage_commit_duration_seconds",
    kind: Kind::Histogram,
    help: "Time of one group commit of the storage writer (SQLite: every write of the moment in \
           one transaction; PostgreSQL: one batch of pushes).",
    labels: &[],
};
pub const PROCESS_RESIDENT_MEMORY: Metric = Metric {
    name: "process_resident_memory_bytes",
    kind: Kind::Gauge,
    help: "Resident memory size in bytes.",
    labels: &[],
};
pub const PROCESS_VIRTUAL_MEMORY: Metric = Metric {
    name: "process_virtual_memory_bytes",
    kind: Kind::Gauge,
    help: "Virtual memory size in bytes.",
    labels: &[],
};
pub const PROCESS_CPU: Metric = Metric {
    name: "process_cpu_seconds_total",
    kind: Kind::Counter,
    help: "Total user and system CPU time spent in seconds.",
    labels: &[],
};
pub const PROCESS_OPEN_FDS: Metric = Metric {
    name: "process_open_fds",
    kind: Kind::Gauge,
    help: "Number of open file descriptors.",
    labels: &[],
};
pub const PROCESS_MAX_FDS: Metric = Metric {
    name: "process_max_fds",
    kind: Kind::Gauge,
    help: "Maximum number of open file descriptors (the soft limit).",
    labels: &[],
};
pub const PROCESS_START_TIME: Metric = Metric {
    name: "process_start_time_seconds",
    kind: Kind::Gauge,
    help: "Start time of the process since the Unix epoch in seconds.",
    labels: &[],
};

/// Every metric `/metrics` shows.
pub const ALL: &[Metric] = &[
    CONNECTIONS,
    PUSHES_ACCEPTED,
    DELIVERIES,
    UNDELIVERED,
    HTTP_REQUESTS,
    HTTP_DURATION,
    CALLBACK_PENDING,
    CALLBACK_BATCHES,
    VENDOR_REQUESTS,
    STORAGE_COMMIT,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_VIRTUAL_MEMORY,
    PROCESS_CPU,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_START_TIME,
];

/// Values of `platform` (`pigeon_core::Platform::as_str`; anything else counts as `other`).
pub const PLATFORMS: [&str; 7] = [
    "android", "ios", "hmos", "quickapp", "web", "winphone", "other",
];

/// Values of `vendor`, and of `channel` beside `pigeon`.
pub const VENDORS: [&str; 9] = [
    "apns", "fcm", "huawei", "honor", "xiaomi", "oppo", "vivo", "meizu", "webpush",
];

/// Buckets of the HTTP request histogram, in seconds.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Buckets of the storage commit histogram, in seconds.
pub const STORAGE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Most route templates the HTTP metrics keep apart; past it they count as `other` (the
/// route tables are far smaller: this only bounds a mistake).
pub const MAX_ROUTES: usize = 512;
/// The `route` of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

label_enum!(
    /// The door a push came in through (`dialect` of [`PUSHES_ACCEPTED`]).
    Dialect {
        Jpush => "jpush",
        GetuiLegacy => "getui_legacy",
        GetuiV2 => "getui_v2",
        Geofence => "geofence",
        Schedule => "schedule",
    }
);

label_enum!(
    /// `stage` of [`DELIVERIES`].
    Stage {
        Sent => "sent",
        Delivered => "delivered",
        Clicked => "clicked",
    }
);

label_enum!(
    /// `reason` of [`UNDELIVERED`], in the order of `Push.Undelivered`'s ErrCode 1-5.
    Undelivered {
        Expired => "expired",
        Recalled => "recalled",
        VendorRejected => "vendor_rejected",
        NoChannel => "no_channel",
        DeviceDeleted => "device_deleted",
    }
);

label_enum!(
    /// `result` of [`VENDOR_REQUESTS`].
    VendorResult {
        Ok => "ok",
        DeadToken => "dead_token",
        Retry => "retry",
        Rejected => "rejected",
        Error => "error",
    }
);

label_enum!(
    /// `result` of [`CALLBACK_BATCHES`].
    CallbackResult {
        Ok => "ok",
        Retry => "retry",
        DeadLetter => "dead_letter",
    }
);

/// `channel` of [`DELIVERIES`]: Pigeon's own connection, or a vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Pigeon,
    /// An index into [`VENDORS`].
    Vendor(usize),
}

impl Channel {
    /// The vendor channel of a vendor's key (`"apns"`, ...), if it is one of [`VENDORS`].
    pub fn vendor(key: &str) -> Option<Channel> {
        VENDORS.iter().position(|v| *v == key).map(Channel::Vendor)
    }

    fn index(self) -> usize {
        match self {
            Channel::Pigeon => 0,
            Channel::Vendor(i) => 1 + i.min(VENDORS.len() - 1),
        }
    }

    /// Every value of `channel`, in index order.
    pub fn labels() -> impl Iterator<Item = &'static str> {
        std::iter::once("pigeon").chain(VENDORS)
    }
}

/// The `status` label of an HTTP status: its class.
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[class_index(status)]
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// Every handle, registered once.
struct Handles {
    connections: [Gauge; PLATFORMS.len()],
    pushes: Vec<Counter>,
    deliveries: Vec<[Counter; 3]>,
    undelivered: Vec<Counter>,
    vendor: Vec<Vec<Counter>>,
    callback_pending: Gauge,
    callback_batches: Vec<Counter>,
    storage_commit: Histogram,
    /// Per route template, a pair per status class, made at its first request.
    http: RwLock<HashMap<Box<str>, HttpSlots, foldhash::fast::RandomState>>,
}

type HttpSlots = [Option<(Counter, Histogram)>; 5];

fn labels(pairs: &[(&'static str, &'static str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(k, v)| Label::from_static_parts(k, v))
        .collect()
}

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

fn counter(m: &Metric, pairs: &[(&'static str, &'static str)]) -> Counter {
    debug_assert_eq!(m.kind, Kind::Counter);
    debug_assert!(pairs.iter().map(|p| p.0).eq(m.labels.iter().copied()));
    match RECORDER.get() {
        Some(r) => r.register_counter(&Key::from_parts(m.name, labels(pairs)), &METADATA),
        None => Counter::noop(),
    }
}

fn gauge(m: &Metric, pairs: &[(&'static str, &'static str)]) -> Gauge {
    debug_assert_eq!(m.kind, Kind::Gauge);
    match RECORDER.get() {
        Some(r) => r.register_gauge(&Key::from_parts(m.name, labels(pairs)), &METADATA),
        None => Gauge::noop(),
    }
}

fn histogram(m: &Metric, pairs: Vec<Label>) -> Histogram {
    debug_assert_eq!(m.kind, Kind::Histogram);
    match RECORDER.get() {
        Some(r) => r.register_histogram(&Key::from_parts(m.name, pairs), &METADATA),
        None => Histogram::noop(),
    }
}

impl Handles {
    fn new() -> Handles {
        Handles {
            connections: PLATFORMS.map(|p| gauge(&CONNECTIONS, &[("platform", p)])),
            pushes: Dialect::ALL
                .iter()
                .map(|d| counter(&PUSHES_ACCEPTED, &[("dialect", d.as_str())]))
                .collect(),
            deliveries: Channel::labels()
                .map(|c| {
                    [Stage::Sent, Stage::Delivered, Stage::Clicked]
                        .map(|s| counter(&DELIVERIES, &[("channel", c), ("stage", s.as_str())]))
                })
                .collect(),
            undelivered: Undelivered::ALL
                .iter()
                .map(|r| counter(&UNDELIVERED, &[("reason", r.as_str())]))
                .collect(),
            vendor: VENDORS
                .iter()
                .map(|v| {
                    VendorResult::ALL
                        .iter()
                        .map(|r| {
                            counter(&VENDOR_REQUESTS, &[("vendor", v), ("result", r.as_str())])
                        })
                        .collect()
                })
                .collect(),
            callback_pending: gauge(&CALLBACK_PENDING, &[]),
            callback_batches: CallbackResult::ALL
                .iter()
                .map(|r| counter(&CALLBACK_BATCHES, &[("result", r.as_str())]))
                .collect(),
            storage_commit: histogram(&STORAGE_COMMIT, Vec::new()),
            http: RwLock::new(HashMap::default()),
        }
    }
}

static RECORDER: OnceLock<metrics_exporter_prometheus::PrometheusRecorder> = OnceLock::new();
static RENDER: OnceLock<PrometheusHandle> = OnceLock::new();
static HANDLES: OnceLock<Handles> = OnceLock::new();

fn handles() -> &'static Handles {
    HANDLES.get_or_init(Handles::new)
}

/// Why [`install`] failed.
#[derive(Debug)]
pub struct InstallError(String);

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InstallError {}

/// Sets up the recorder, registers every series that has a fixed set of label values (so
/// each shows at 0 from the start) and starts the thread that folds histogram samples into
/// their buckets every 5 s (they are kept in a lock-free list until then: bounded between
/// scrapes, with or without a scraper). Call once, before any other function here; a second
/// call does nothing.
pub fn install() -> Result<(), InstallError> {
    if RECORDER.get().is_some() {
        return Ok(());
    }
    if HANDLES.get().is_some() {
        return Err(InstallError(
            "metrics were recorded before the recorder was installed".into(),
        ));
    }
    let err = |e: metrics_exporter_prometheus::BuildError| InstallError(e.to_string());
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.name.into()), HTTP_BUCKETS)
        .map_err(err)?
        .set_buckets_for_metric(Matcher::Full(STORAGE_COMMIT.name.into()), STORAGE_BUCKETS)
        .map_err(err)?
        .build_recorder();
    for m in ALL.iter().filter(|m| !m.name.starts_with("process_")) {
        let name = metrics::KeyName::from_const_str(m.name);
        let help = metrics::SharedString::const_str(m.help);
        match m.kind {
            Kind::Counter => recorder.describe_counter(name, None, help),
            Kind::Gauge => recorder.describe_gauge(name, None, help),
            Kind::Histogram => recorder.describe_histogram(name, None, help),
        }
    }
    let render = recorder.handle();
    if RECORDER.set(recorder).is_err() {
        return Ok(());
    }
    let upkeep = render.clone();
    let _ = RENDER.set(render);
    handles();
    std::thread::Builder::new()
        .name("pigeon-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .map_err(|e| InstallError(format!("starting the metrics thread: {e}")))?;
    Ok(())
}

/// The media type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric in the Prometheus text format (empty before [`install`]). Reads `/proc`
/// (the process metrics): call it off the async runtime's threads.
pub fn render() -> String {
    let Some(handle) = RENDER.get() else {
        return String::new();
    };
    let mut text = handle.render();
    process::render(&mut text);
    text
}

fn platform_index(platform: &str) -> usize {
    PLATFORMS
        .iter()
        .position(|p| *p == platform)
        .unwrap_or(PLATFORMS.len() - 1)
}

/// A device connected (`platform`: `pigeon_core::Platform::as_str`).
pub fn connection_opened(platform: &str) {
    handles().connections[platform_index(platform)].increment(1.0);
}

/// A device's connection ended.
pub fn connection_closed(platform: &str) {
    handles().connections[platform_index(platform)].decrement(1.0);
}

/// A push was accepted through `door`.
pub fn push_accepted(door: Dialect) {
    handles().pushes[door as usize].increment(1);
}

/// `n` devices reached `stage` through `channel`.
pub fn deliveries(channel: Channel, stage: Stage, n: u64) {
    if n > 0 {
        handles().deliveries[channel.index()][stage as usize].increment(n);
    }
}

/// `n` devices will never get a push, for `reason`.
pub fn undelivered(reason: Undelivered, n: u64) {
    if n > 0 {
        handles().undelivered[reason as usize].increment(n);
    }
}

/// Outcomes of sends to `vendor` (a key of [`VENDORS`]; others are not counted), counted
/// by [`VendorResult`] index.
pub fn vendor_results(vendor: &str, counts: &[u64; 5]) {
    let Some(v) = VENDORS.iter().position(|k| *k == vendor) else {
        return;
    };
    for (counter, &n) in handles().vendor[v].iter().zip(counts) {
        if n > 0 {
            counter.increment(n);
        }
    }
}

/// `n` sends to `vendor` ended with `result`.
pub fn vendor_result(vendor: &str, result: VendorResult, n: u64) {
    let mut counts = [0; 5];
    counts[result as usize] = n;
    vendor_results(vendor, &counts);
}

/// A callback batch was posted, with `result`.
pub fn callback_batch(result: CallbackResult) {
    handles().callback_batches[result as usize].increment(1);
}

/// Moves the pending callback events by `delta` (each endpoint adds what it holds and takes
/// it back when it holds less, or stops).
pub fn callback_pending_add(delta: i64) {
    let g = &handles().callback_pending;
    if delta >= 0 {
        g.increment(delta as f64);
    } else {
        g.decrement(delta.unsigned_abs() as f64);
    }
}

/// One storage group commit took `took`.
pub fn storage_commit(took: Duration) {
    handles().storage_commit.record(took.as_secs_f64());
}

/// One HTTP request was answered: `route` is the matched route template (`None`: no route
/// matched), `status` the answer's status.
pub fn http_request(route: Option<&str>, status: u16, took: Duration) {
    let h = handles();
    let route = route.unwrap_or(UNMATCHED);
    let class = class_index(status);
    let secs = took.as_secs_f64();
    if let Some(Some((count, time))) = h.http.read().get(route).map(|slots| &slots[class]) {
        count.increment(1);
        time.record(secs);
        return;
    }
    let mut map = h.http.write();
    let known = map.len();
    let route = if map.contains_key(route) || known < MAX_ROUTES {
        route
    } else {
        "other"
    };
    let slots = map.entry(route.into()).or_default();
    let (count, time) = slots[class].get_or_insert_with(|| {
        let pairs = || {
            vec![
                Label::new("route", route.to_string()),
                Label::from_static_parts("status", STATUS_CLASSES[class]),
            ]
        };
        let count = match RECORDER.get() {
            Some(r) => r.register_counter(&Key::from_parts(HTTP_REQUESTS.name, pairs()), &METADATA),
            None => Counter::noop(),
        };
        (count, histogram(&HTTP_DURATION, pairs()))
    });
    count.increment(1);
    time.record(secs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_documented_and_well_formed() {
        let mut seen = HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(
                m.name.starts_with("pigeon_") || m.name.starts_with("process_"),
                "{}",
                m.name
            );
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert!(m.help.len() > 10 && !m.help.contains('\n'), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
            if m.kind == Kind::Histogram {
                assert!(m.name.ends_with("_seconds"), "{}", m.name);
            }
            for l in m.labels {
                assert!(l.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            }
        }
        for values in [
            &PLATFORMS[..],
            &VENDORS[..],
            &Dialect::ALL.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            &Undelivered::ALL
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>(),
        ] {
            assert_eq!(values.iter().collect::<HashSet<_>>().len(), values.len());
        }
    }

    #[test]
    fn status_classes_and_channels() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(0), "1xx");
        assert_eq!(status_class(999), "5xx");
        assert_eq!(Channel::vendor("apns"), Some(Channel::Vendor(0)));
        assert_eq!(Channel::vendor("nope"), None);
        assert_eq!(Channel::labels().count(), 1 + VENDORS.len());
        assert_eq!(
            Channel::vendor("webpush").map(Channel::index),
            Some(VENDORS.len())
        );
    }

    /// One test installs the recorder (it is process-wide), records and reads the text.
    #[test]
    fn every_family_is_rendered_with_its_type_and_help() {
        install().unwrap();
        install().unwrap();
        http_request(Some("/v3/push"), 200, Duration::from_millis(3));
        http_request(None, 404, Duration::from_millis(1));
        deliveries(Channel::Pigeon, Stage::Sent, 2);
        deliveries(Channel::Pigeon, Stage::Sent, 3);
        connection_opened("android");
        connection_opened("android");
        connection_closed("android");
        connection_opened("martian");
        vendor_results("apns", &[1, 0, 0, 2, 0]);
        callback_pending_add(7);
        callback_pending_add(-3);
        storage_commit(Duration::from_micros(300));
        let text = render();
        for m in ALL {
            assert!(
                text.contains(&format!("# TYPE {} {}\n", m.name, m.kind.as_str())),
                "{} missing:\n{text}",
                m.name
            );
            assert!(
                text.contains(&format!("# HELP {} ", m.name)),
                "{} has no help",
                m.name
            );
        }
        for line in [
            "pigeon_deliveries_total{channel=\"pigeon\",stage=\"sent\"} 5",
            "pigeon_deliveries_total{channel=\"webpush\",stage=\"clicked\"} 0",
            "pigeon_connections{platform=\"android\"} 1",
            "pigeon_connections{platform=\"other\"} 1",
            "pigeon_vendor_requests_total{vendor=\"apns\",result=\"rejected\"} 2",
            "pigeon_callback_events_pending 4",
            "pigeon_http_requests_total{route=\"/v3/push\",status=\"2xx\"} 1",
            "pigeon_http_requests_total{route=\"unmatched\",status=\"4xx\"} 1",
            "pigeon_storage_commit_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}

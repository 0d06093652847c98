//! The process metrics Prometheus's own clients export, read from `/proc/self` at each
//! scrape (Linux; elsewhere none are shown).

use crate::Metric;
use std::fmt::Write as _;

fn family(out: &mut String, m: &Metric, value: f64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n",
        name = m.name,
        help = m.help,
        kind = m.kind.as_str(),
    );
}

/// Appends the process metrics to `out`.
pub(crate) fn render(out: &mut String) {
    #[cfg(target_os = "linux")]
    if let Some(p) = read() {
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        family(out, &crate::PROCESS_CPU, p.cpu_seconds);
        family(out, &crate::PROCESS_RESIDENT_MEMORY, p.resident_bytes);
        family(out, &crate::PROCESS_VIRTUAL_MEMORY, p.virtual_bytes);
        family(out, &crate::PROCESS_START_TIME, p.start_time_seconds);
        family(out, &crate::PROCESS_OPEN_FDS, p.open_fds);
        if let Some(max) = p.max_fds {
            family(out, &crate::PROCESS_MAX_FDS, max);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (out, family);
}

#[cfg(target_os = "linux")]
struct Process {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: f64,
    open_fds: f64,
    max_fds: Option<f64>,
}

#[cfg(target_os = "linux")]
fn read() -> Option<Process> {
    // SAFETY: sysconf and getrlimit only read system values (into a local struct).
    let (ticks, page, max_fds) = unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let max = (libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0
            && lim.rlim_cur != libc::RLIM_INFINITY)
            .then_some(lim.rlim_cur as f64);
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
            max,
        )
    };
    if ticks <= 0 || page <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let p = parse(&stat, &boot, ticks as f64, page as f64)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    Some(Process {
        open_fds,
        max_fds,
        ..p
    })
}

/// The figures of `/proc/self/stat` (fields after the command name, which may hold spaces
/// and parentheses: everything up to the last `)`), with the boot time of `/proc/stat`.
#[cfg(target_os = "linux")]
fn parse(stat: &str, proc_stat: &str, ticks: f64, page: f64) -> Option<Process> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state): field n is rest[n - 3].
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<f64>().ok();
    let btime: f64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Process {
        cpu_seconds: (num(14)? + num(15)?) / ticks,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)? * page,
        start_time_seconds: btime + num(22)? / ticks,
        open_fds: 0.0,
        max_fds: None,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_past_the_command_name() {
        let stat = "4242 (pigeon (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    12 0 1000 123456789 2048 18446744073709551615";
        let p = parse(stat, "cpu 1 2 3\nbtime 1700000000\n", 100.0, 4096.0).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.start_time_seconds, 1_700_000_010.0);
        assert_eq!(p.virtual_bytes, 123_456_789.0);
        assert_eq!(p.resident_bytes, 2048.0 * 4096.0);
        let live = read().unwrap();
        assert!(live.resident_bytes > 1e6 && live.open_fds >= 3.0);
    }
}

//! `pigeon bench audience`: resolving `tag_and [50%, 10%]` + `tag_not [1%]` over one app's
//! devices with Pigeon's audience index, beside Redis SINTERSTORE + SDIFFSTORE on the same
//! sets, in the same run. Also the memory each needs for those tags. Then the same audience
//! saved as a segment, and as an A/B test's (45 / 45, control 10): a push to each resolved
//! (and split) as the server does, beside the plain expression's time.

use crate::procs::{free_port, require, wait_port, Guard};
use crate::resp::{command, Redis, Reply};
use crate::table::{median, Table};
use anyhow::bail;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pigeon_core::{
    Audience, AudienceExpr, AudienceIndex, DeviceAttrs, Platform, PlatformSet, SavedAudiences,
    VariantBuckets,
};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct AudienceArgs {
    #[arg(long, default_value_t = 10_000_000)]
    pub devices: u32,
    /// Resolutions timed; the table shows the median.
    #[arg(long, default_value_t = 21)]
    pub rounds: usize,
    /// Skip the Redis comparison.
    #[arg(long)]
    pub no_redis: bool,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The tags of device `ordinal`: independent draws of 50%, 10% and 1%.
pub fn tags_of(ordinal: u32) -> Vec<String> {
    let h = splitmix(ordinal as u64);
    let mut tags = Vec::new();
    if h % 100 < 50 {
        tags.push("t50".to_string());
    }
    if (h >> 20) % 100 < 10 {
        tags.push("t10".to_string());
    }
    if (h >> 40) % 100 < 1 {
        tags.push("t1".to_string());
    }
    tags
}

/// A registration id for device `ordinal`, 20 hex digits.
pub fn registration_id(ordinal: u32) -> String {
    format!(
        "{:020x}",
        splitmix(ordinal as u64 ^ 0xABCD) as u128 * 7 + ordinal as u128
    )
}

/// An index of `n` devices with the scenario's tags, through the same `upsert` the server
/// uses, and the devices' registration ids by ordinal (the index keeps none); `progress`
/// hears every 100k devices.
pub fn build_index(n: u32, progress: impl Fn(u32)) -> (AudienceIndex, Vec<String>) {
    let mut index = AudienceIndex::new();
    let mut ids = Vec::with_capacity(n as usize);
    for ordinal in 0..n {
        let (rid, tags) = (registration_id(ordinal), tags_of(ordinal));
        let attrs = DeviceAttrs {
            registration_id: &rid,
            platform: Platform::Android,
            alias: None,
            tags: &tags,
            region: None,
        };
        index.upsert(ordinal, None, attrs);
        ids.push(rid);
        if ordinal % 100_000 == 0 {
            progress(ordinal);
        }
    }
    (index, ids)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} ({{eta}})"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

pub fn run(args: AudienceArgs) -> anyhow::Result<()> {
    if !args.no_redis {
        require("redis-server", "redis-server")?;
    }
    let n = args.devices;
    let progress = bar(n as u64, "indexing devices");
    let (index, ids) = build_index(n, |done| progress.set_position(done as u64));
    progress.finish_and_clear();
    let audience = Audience::Expr(AudienceExpr {
        tag_and: vec!["t50".into(), "t10".into()],
        tag_not: vec!["t1".into()],
        ..Default::default()
    });
    let mut pigeon_ms = Vec::new();
    let mut matched = 0;
    for _ in 0..args.rounds {
        let t = Instant::now();
        let r = index.resolve(&audience, PlatformSet::all(), &ids);
        pigeon_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        matched = r.len();
    }
    let pigeon_median = median(pigeon_ms.clone());
    let pigeon_bytes = index.tag_index_bytes();
    eprintln!("pigeon: {matched} devices matched; resolve ms {pigeon_ms:.3?}");
    let saved = saved_audiences(
        (&index, &ids),
        &audience,
        n,
        args.rounds,
        (pigeon_median, matched),
    )?;

    let mut table = Table::new(&[
        "devices",
        "matched",
        "pigeon ms",
        "redis ms",
        "speed-up",
        "pigeon tag index MiB",
        "redis sets MiB",
        "memory ratio",
    ]);
    if args.no_redis {
        table.row(vec![
            n.to_string(),
            matched.to_string(),
            format!("{pigeon_median:.3}"),
            String::new(),
            String::new(),
            format!("{:.1}", pigeon_bytes as f64 / 1048576.0),
            String::new(),
            String::new(),
        ]);
        table.print();
        saved.print();
        return Ok(());
    }
    let (redis_ms, redis_bytes, redis_matched) = redis(n, args.rounds.min(7))?;
    if redis_matched != matched {
        bail!("redis matched {redis_matched}, pigeon {matched}: the data differ");
    }
    table.row(vec![
        n.to_string(),
        matched.to_string(),
        format!("{pigeon_median:.3}"),
        format!("{redis_ms:.1}"),
        format!("{:.0}x", redis_ms / pigeon_median),
        format!("{:.1}", pigeon_bytes as f64 / 1048576.0),
        format!("{:.1}", redis_bytes as f64 / 1048576.0),
        format!("1/{:.0}", redis_bytes as f64 / pigeon_bytes as f64),
    ]);
    table.print();
    saved.print();
    Ok(())
}

/// A push to a segment whose audience is `audience`, and one to an A/B test of that audience,
/// resolved (and split) as the server resolves them, each timed beside `plain` (the plain
/// expression's median ms and match). The test's buckets are built first, as when a test is
/// created: that is not part of a push.
fn saved_audiences(
    (index, ids): (&AudienceIndex, &Vec<String>),
    audience: &Audience,
    n: u32,
    rounds: usize,
    (plain_ms, plain_matched): (f64, u64),
) -> anyhow::Result<Table> {
    let t = Instant::now();
    let mut buckets = VariantBuckets::new("ab-bench", vec![45, 45]);
    for ordinal in 0..n {
        buckets.add(ordinal, &registration_id(ordinal));
    }
    let buckets_ms = t.elapsed().as_secs_f64() * 1000.0;
    let by_segment = Audience::Expr(AudienceExpr {
        segment: Some("seg-bench".into()),
        ..Default::default()
    });
    let by_test = Audience::Expr(AudienceExpr {
        abtest: Some("ab-bench".into()),
        ..Default::default()
    });
    let cases = [
        (
            "segment",
            &by_segment,
            SavedAudiences {
                segment: Some(audience),
                abtest: None,
            },
        ),
        (
            "A/B test (45/45, control 10)",
            &by_test,
            SavedAudiences {
                segment: None,
                abtest: Some((audience, &buckets)),
            },
        ),
    ];
    let mut table = Table::new(&[
        "push to",
        "devices",
        "targets",
        "per variant",
        "control",
        "ms",
        "x the tag expression",
    ]);
    table.row(vec![
        "tag expression".into(),
        n.to_string(),
        plain_matched.to_string(),
        String::new(),
        String::new(),
        format!("{plain_ms:.3}"),
        "1.00".into(),
    ]);
    for (name, push_audience, saved) in cases {
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..rounds {
            let t = Instant::now();
            let r = index.resolve_saved(push_audience, PlatformSet::all(), saved, ids);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            last = Some(r);
        }
        let Some(r) = last else {
            bail!("no rounds");
        };
        let (variants, control) = match &r.variants {
            Some((v, c)) => (v.iter().map(|b| b.len()).collect::<Vec<_>>(), *c),
            None => (Vec::new(), 0),
        };
        let reached = if variants.is_empty() {
            r.targets.len()
        } else {
            variants.iter().sum::<u64>() + control
        };
        if reached != plain_matched {
            bail!("{name}: {reached} devices, the tag expression {plain_matched}");
        }
        let ms = median(times);
        table.row(vec![
            name.into(),
            n.to_string(),
            r.targets.len().to_string(),
            variants
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            if r.variants.is_some() {
                control.to_string()
            } else {
                String::new()
            },
            format!("{ms:.3}"),
            format!("{:.2}", ms / plain_ms),
        ]);
    }
    eprintln!("A/B test buckets over {n} devices built in {buckets_ms:.0} ms (once, at creation)");
    Ok(table)
}

/// Loads the same sets into a fresh Redis and times SINTERSTORE + SDIFFSTORE.
fn redis(n: u32, rounds: usize) -> anyhow::Result<(f64, u64, u64)> {
    let port = free_port()?;
    let _guard = Guard(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()?,
    );
    wait_port(port, Duration::from_secs(10))?;
    let mut redis = Redis::connect(port)?;
    let before = redis.used_memory()?;
    let progress = bar(n as u64, "loading redis");
    let batch = 1000u32;
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let mut members: [Vec<String>; 3] = Default::default();
        for ordinal in start..end {
            for t in tags_of(ordinal) {
                let slot = match t.as_str() {
                    "t50" => 0,
                    "t10" => 1,
                    _ => 2,
                };
                members[slot].push(registration_id(ordinal));
            }
        }
        let mut out = Vec::new();
        let mut commands = 0;
        for (slot, key) in ["t50", "t10", "t1"].iter().enumerate() {
            if members[slot].is_empty() {
                continue;
            }
            let mut args: Vec<&[u8]> = vec![b"SADD", key.as_bytes()];
            args.extend(members[slot].iter().map(|m| m.as_bytes()));
            command(&args, &mut out);
            commands += 1;
        }
        redis.send_raw(&out)?;
        for _ in 0..commands {
            redis.read_reply()?;
        }
        start = end;
        progress.set_position(start as u64);
    }
    progress.finish_and_clear();
    let loaded = redis.used_memory()? - before;
    let mut times = Vec::new();
    let mut matched = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        redis.call(&[b"SINTERSTORE", b"tmp", b"t50", b"t10"])?;
        let r = redis.call(&[b"SDIFFSTORE", b"out", b"tmp", b"t1"])?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if let Reply::Int(m) = r {
            matched = m as u64;
        }
        redis.call(&[b"DEL", b"tmp", b"out"])?;
    }
    eprintln!("redis: {matched} matched; ms {times:.1?}");
    Ok((median(times), loaded, matched))
}

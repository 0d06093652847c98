//! The device frame rate rule (protocol §4 "Rate"): on average at most `rate` frames a
//! second other than `ack` and `ping`, bursts of up to `burst`; frames over that are refused
//! (2002), and a device that keeps going over for 10 s is closed (4006).
//!
//! Every connection carries a [`FrameRate`] of 12 bytes, no allocation, so the rule does
//! not add to what an idle connection costs. The bucket is kept as GCRA (the generic cell
//! rate algorithm): one number, the time at which the bucket would be full again, so a
//! refill needs no timer and no separate count. Times are ticks of 100 µs on a wrapping
//! 32-bit clock: fine enough for rates up to 10,000 a second, and compared only over
//! spans far shorter than the 2.5 days after which a difference would be ambiguous
//! ([`FrameRate::settle`] keeps it so for a connection that sends nothing counted).

use std::sync::OnceLock;
use std::time::Instant;

/// Ticks of the rate clock in a second.
const TICKS_PER_S: u32 = 10_000;
/// How long a device must keep being refused before it is closed (fixed by the protocol).
const CLOSE_AFTER: u32 = 10 * TICKS_PER_S;
/// Refused frames at most this far apart belong to one over-limit period; a longer pause
/// ends it. A device "keeps going over" while it is refused at least once a second.
const GAP: u32 = TICKS_PER_S;
/// Most frames a second that can be told apart on this clock.
pub const MAX_RATE_PER_S: u32 = TICKS_PER_S;
/// A burst is capped at an hour's worth of the rate, so times stay comparable.
const MAX_TOLERANCE: u32 = 3600 * TICKS_PER_S;

/// The limits, as the gateway is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Ticks one frame's token takes to come back (1 s / rate).
    interval: u32,
    /// How far the bucket's full-again time may run ahead of now: (burst − 1) intervals.
    tolerance: u32,
}

impl Limits {
    /// `rate` frames a second on average (1 to [`MAX_RATE_PER_S`]), bursts of `burst` (≥ 1).
    pub fn new(rate_per_s: u32, burst: u32) -> Limits {
        let interval = TICKS_PER_S / rate_per_s.clamp(1, MAX_RATE_PER_S);
        let tolerance = u64::from(interval) * u64::from(burst.max(1) - 1);
        Limits {
            interval,
            tolerance: u32::try_from(tolerance.min(u64::from(MAX_TOLERANCE)))
                .unwrap_or(MAX_TOLERANCE),
        }
    }
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Answer 2002 and drop the frame.
    Refuse,
    /// The device kept going over for 10 s: close with 4006.
    Close,
}

/// One connection's state: the bucket and the current over-limit period.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameRate {
    /// When the bucket will be full again; in the past = full.
    full_at: u32,
    /// When the current over-limit period began (its first refused frame).
    over_since: u32,
    /// The last refused frame, in ms after `over_since` (saturating; a period that lasts
    /// 10 s closes the connection, so this never needs more).
    last_refused_ms: u16,
    /// Whether an over-limit period is running.
    over: bool,
}

impl FrameRate {
    /// A full bucket at `now` ([`now_ticks`]).
    pub fn new(now: u32) -> FrameRate {
        FrameRate {
            full_at: now,
            ..FrameRate::default()
        }
    }

    /// Counts one frame arriving at `now` ([`now_ticks`]).
    ///
    /// The over-limit period: the first refused frame starts it; a refused frame more than
    /// a second after the previous refused one starts a new one (the device was back
    /// within its rate meanwhile); a refused frame 10 s or more after the period's start
    /// closes the connection. Accepted frames in between do not end a period: a device
    /// sending at twice its rate has every other frame accepted and still keeps going over.
    pub fn check(&mut self, now: u32, limits: Limits) -> Verdict {
        // How far the full-again time is ahead of now; behind now means a full bucket, and
        // so does a value no update could have left (a stale one, wrapped around).
        let ahead = match self.full_at.wrapping_sub(now) {
            d if d > limits.tolerance.saturating_add(limits.interval) => 0,
            d => d,
        };
        if ahead <= limits.tolerance {
            self.full_at = now.wrapping_add(ahead + limits.interval);
            return Verdict::Accept;
        }
        if !self.over || now.wrapping_sub(self.last_refused()) > GAP {
            self.over = true;
            self.over_since = now;
        }
        let over_for = now.wrapping_sub(self.over_since);
        self.last_refused_ms = u16::try_from(over_for / 10).unwrap_or(u16::MAX);
        if over_for >= CLOSE_AFTER {
            return Verdict::Close;
        }
        Verdict::Refuse
    }

    /// Brings the state to `now` without counting a frame: a bucket full by now is marked
    /// full, an over-limit period whose last refusal is past the gap ends. Called on the
    /// connection's keepalive timer, so no stored time falls so far behind the clock that
    /// it could wrap.
    pub fn settle(&mut self, now: u32) {
        if self.full_at.wrapping_sub(now) > MAX_TOLERANCE + TICKS_PER_S {
            self.full_at = now;
        }
        if self.over && now.wrapping_sub(self.last_refused()) > GAP {
            self.over = false;
        }
    }

    fn last_refused(&self) -> u32 {
        self.over_since
            .wrapping_add(u32::from(self.last_refused_ms) * (TICKS_PER_S / 1000))
    }
}

/// Now on the rate clock: 100 µs ticks since the first call in this process, wrapping.
pub fn now_ticks() -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    // Truncation is the wrap: only differences of nearby times are ever used.
    (epoch.elapsed().as_micros() / 100) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u32 = TICKS_PER_S;

    fn run(rate: &mut FrameRate, limits: Limits, at: u32, frames: u32) -> (u32, u32, u32) {
        let (mut accepted, mut refused, mut closed) = (0, 0, 0);
        for _ in 0..frames {
            match rate.check(at, limits) {
                Verdict::Accept => accepted += 1,
                Verdict::Refuse => refused += 1,
                Verdict::Close => closed += 1,
            }
        }
        (accepted, refused, closed)
    }

    #[test]
    fn the_state_stays_small() {
        assert!(std::mem::size_of::<FrameRate>() <= 12);
    }

    #[test]
    fn a_burst_takes_exactly_the_bucket() {
        let limits = Limits::new(20, 100);
        let mut rate = FrameRate::new(0);
        assert_eq!(run(&mut rate, limits, 5 * S, 150), (100, 50, 0));
        // A second later, 20 more tokens have come back.
        assert_eq!(run(&mut rate, limits, 6 * S, 30), (20, 10, 0));
    }

    #[test]
    fn within_the_rate_nothing_is_refused() {
        let limits = Limits::new(20, 100);
        let mut rate = FrameRate::new(0);
        for i in 0..2000 {
            assert_eq!(
                rate.check(S + i * S / 20, limits),
                Verdict::Accept,
                "frame {i}"
            );
        }
    }

    #[test]
    fn keeping_going_over_for_ten_seconds_closes() {
        let limits = Limits::new(5, 5);
        let mut rate = FrameRate::new(0);
        // Twice the rate: every other frame is accepted, and still the device keeps going
        // over; the refused frame 10 s after the first refused one closes.
        let mut t = S;
        let mut first_refused = None;
        loop {
            match rate.check(t, limits) {
                Verdict::Accept => {}
                Verdict::Refuse => {
                    first_refused.get_or_insert(t);
                }
                Verdict::Close => break,
            }
            t += S / 10;
            assert!(t < 30 * S, "never closed");
        }
        let over_for = t - first_refused.unwrap();
        assert!((10 * S..10 * S + S / 5).contains(&over_for), "{over_for}");
    }

    #[test]
    fn a_pause_ends_an_over_limit_period() {
        let limits = Limits::new(5, 5);
        let mut rate = FrameRate::new(0);
        // Bursts over the limit every 2 s for a minute: each burst is refused in part, but
        // the pauses between them are longer than the gap, so it is never closed.
        for burst in 0..30 {
            let (accepted, refused, closed) = run(&mut rate, limits, S + burst * 2 * S, 20);
            assert_eq!((accepted, refused, closed), (5, 15, 0), "burst {burst}");
        }
    }

    #[test]
    fn the_clock_may_wrap() {
        let limits = Limits::new(20, 100);
        let start = u32::MAX - S / 2;
        let mut rate = FrameRate::new(start);
        assert_eq!(run(&mut rate, limits, start, 150), (100, 50, 0));
        // A second later the clock has wrapped; 20 tokens came back as usual.
        assert_eq!(
            run(&mut rate, limits, start.wrapping_add(S), 30),
            (20, 10, 0)
        );
        // Long after, settled on the keepalive timer on the way, the bucket is full.
        let mut t = start.wrapping_add(S);
        for _ in 0..100_000 {
            t = t.wrapping_add(60 * S);
            rate.settle(t);
        }
        assert_eq!(run(&mut rate, limits, t, 150), (100, 50, 0));
    }
}

//! Progress on stderr for the long commands (convert, perplexity, imatrix): on a terminal,
//! a bar with the elapsed time, the ETA and the total; anywhere else (a log file, a CI
//! job, a pipe) a plain line every few seconds, so that a run of minutes is never silent
//! and a log shows how far it got.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Time between two plain lines unless `LLQ_PROGRESS_INTERVAL_MS` says otherwise (tests
/// set 0: a line for every step).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// What the position counts.
#[derive(Clone, Copy)]
pub enum Unit {
    Bytes,
    /// Steps named by the word (`window`, `chunk`, `batch`).
    Steps(&'static str),
}

pub struct Progress {
    /// The terminal's bar; `None` when stderr is not a terminal.
    bar: Option<ProgressBar>,
    plain: Mutex<Plain>,
}

/// The state behind the plain lines (kept for the bar too: it is cheap).
struct Plain {
    what: &'static str,
    unit: Unit,
    start: Instant,
    last_line: Instant,
    interval: Duration,
    len: u64,
    pos: u64,
    msg: String,
}

impl Progress {
    /// Progress of `what` (the command, as the plain lines name it) over `len` units (0
    /// when not known yet: see [`Progress::set_length`]).
    pub fn new(what: &'static str, unit: Unit, len: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let counts = match unit {
                Unit::Bytes => "{bytes}/{total_bytes}".to_string(),
                Unit::Steps(word) => format!("{word} {{pos}}/{{len}}"),
            };
            let style = ProgressStyle::with_template(&format!(
                "{{spinner}} {{elapsed_precise}} [{{bar:30}}] {counts} ETA {{eta}} {{msg}}"
            ))
            .expect("valid template")
            .progress_chars("=> ");
            ProgressBar::new(len).with_style(style)
        });
        let now = Instant::now();
        Progress {
            bar,
            plain: Mutex::new(Plain {
                what,
                unit,
                start: now,
                last_line: now,
                interval: interval(),
                len,
                pos: 0,
                msg: String::new(),
            }),
        }
    }

    pub fn set_length(&self, len: u64) {
        if let Some(b) = &self.bar {
            b.set_length(len);
        }
        self.plain().len = len;
    }

    /// Text shown after the counts (the tensor being written, the running PPL); set it
    /// before moving the position, so that a plain line carries the latest.
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(b) = &self.bar {
            b.set_message(msg.clone());
        }
        self.plain().msg = msg;
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
        let mut p = self.plain();
        p.pos = pos;
        self.maybe_line(&mut p);
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        let mut p = self.plain();
        p.pos += n;
        self.maybe_line(&mut p);
    }

    /// Remove the bar (the command's own summary follows).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn plain(&self) -> std::sync::MutexGuard<'_, Plain> {
        self.plain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Without a terminal: a line when the interval has passed since the last one (the
    /// first one an interval after the start, so a short run prints none).
    fn maybe_line(&self, p: &mut Plain) {
        if self.bar.is_some() {
            return;
        }
        let now = Instant::now();
        if now.duration_since(p.last_line) < p.interval {
            return;
        }
        p.last_line = now;
        eprintln!("{}", p.line(now));
    }
}

impl Plain {
    /// `llq: convert: 12.0 MiB of 90.5 MiB (13%), 5s elapsed, ETA 33s, blk.3.attn_q.weight`
    fn line(&self, now: Instant) -> String {
        let elapsed = now.duration_since(self.start);
        let counts = match self.unit {
            Unit::Bytes => format!("{} of {}", HumanBytes(self.pos), HumanBytes(self.len)),
            Unit::Steps(word) => format!("{word} {} of {}", self.pos, self.len),
        };
        let pct = match self.len {
            0 => String::new(),
            len => format!(" ({}%)", self.pos.min(len) * 100 / len),
        };
        // The rate so far, extrapolated over what is left.
        let eta = match (self.pos, self.len) {
            (0, _) | (_, 0) => "?".to_string(),
            (pos, len) => {
                let left = len.saturating_sub(pos) as f64 / pos as f64;
                short_duration(elapsed.mul_f64(left))
            }
        };
        let msg = match self.msg.as_str() {
            "" => String::new(),
            m => format!(", {m}"),
        };
        format!(
            "llq: {}: {counts}{pct}, {} elapsed, ETA {eta}{msg}",
            self.what,
            short_duration(elapsed)
        )
    }
}

/// `LLQ_PROGRESS_INTERVAL_MS`, else [`DEFAULT_INTERVAL`].
fn interval() -> Duration {
    std::env::var("LLQ_PROGRESS_INTERVAL_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_INTERVAL, Duration::from_millis)
}

/// `7s`, `3m05s`, `1h02m`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_secs(7)), "7s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(short_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn a_plain_line_has_counts_percent_elapsed_and_eta() {
        let start = Instant::now();
        let p = Plain {
            what: "perplexity",
            unit: Unit::Steps("window"),
            start,
            last_line: start,
            interval: Duration::ZERO,
            len: 40,
            pos: 10,
            msg: "PPL 18.9".into(),
        };
        let line = p.line(start + Duration::from_secs(30));
        assert_eq!(
            line,
            "llq: perplexity: window 10 of 40 (25%), 30s elapsed, ETA 1m30s, PPL 18.9"
        );
    }
}

//! Progress on stderr for long operations: a bar with rate and ETA when
//! stderr is a terminal (indicatif), a plain line every few seconds
//! otherwise (logs, CI), nothing with `--quiet`.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: String,
    unit: &'static str,
    mode: Mode,
}

enum Mode {
    Quiet,
    Bar(ProgressBar),
    Plain { started: Instant, last: Instant, total: Option<u64>, done: u64 },
}

impl Progress {
    /// `what` names the operation ("verified"), `unit` what is counted
    /// ("entries"); `total` when it is known.
    pub fn new(what: &'static str, unit: &'static str, total: Option<u64>, quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar(
                ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr()).with_style(style(what, unit, total)),
            )
        } else {
            let now = Instant::now();
            Mode::Plain { started: now, last: now, total, done: 0 }
        };
        Progress { what: what.to_owned(), unit, mode }
    }

    /// Bytes instead of counts.
    pub fn bytes(what: &'static str, quiet: bool) -> Progress {
        Progress::bytes_of(what, None, quiet)
    }

    /// Bytes of a known total (an input file), with the ETA.
    pub fn bytes_of(what: &'static str, total: Option<u64>, quiet: bool) -> Progress {
        let p = Progress::new(what, "bytes", total, quiet);
        if let Mode::Bar(bar) = &p.mode {
            let template = match total {
                Some(_) => format!("{what} {{bar:30}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, ETA {{eta}})"),
                None => format!("{what} {{spinner}} {{bytes}} ({{bytes_per_sec}})"),
            };
            bar.set_style(ProgressStyle::with_template(&template).expect("template is valid"));
        }
        p
    }

    pub fn set_total(&mut self, t: u64) {
        match &mut self.mode {
            Mode::Bar(bar) => bar.set_length(t),
            Mode::Plain { total, .. } => *total = Some(t),
            Mode::Quiet => {}
        }
    }

    /// The count so far (not an increment).
    pub fn set(&mut self, n: u64) {
        match &mut self.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => bar.set_position(n),
            Mode::Plain { started, last, total, done } => {
                *done = n;
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    eprintln!("tidemark: {}", plain_line(&self.what, self.unit, n, *total, started.elapsed()));
                }
            }
        }
    }

    pub fn inc(&mut self, by: u64) {
        let n = match &self.mode {
            Mode::Quiet => return,
            Mode::Bar(bar) => bar.position() + by,
            Mode::Plain { done, .. } => done + by,
        };
        self.set(n);
    }

    /// Clears the bar (the command prints its own result).
    pub fn finish(self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

/// The bar's look: `what`, the bar, the count of `unit`, rate and ETA.
fn style(what: &str, unit: &str, total: Option<u64>) -> ProgressStyle {
    let template = match total {
        Some(_) => format!("{what} {{bar:30}} {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}})"),
        None => format!("{what} {{spinner}} {{human_pos}} {unit} ({{per_sec}})"),
    };
    ProgressStyle::with_template(&template).expect("template is valid")
}

/// `verified 120000/300000 entries (45000/s, ETA 4s)`.
fn plain_line(what: &str, unit: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = done as f64 / secs;
    match total {
        Some(t) if rate > 0.0 => {
            let eta = (t.saturating_sub(done)) as f64 / rate;
            format!("{what} {done}/{t} {unit} ({rate:.0}/s, ETA {eta:.0}s)")
        }
        Some(t) => format!("{what} {done}/{t} {unit}"),
        None => format!("{what} {done} {unit} ({rate:.0}/s)"),
    }
}

/// The bar (or the plain lines) as the sink of `tidemark_ops` work.
impl tidemark_ops::Progress for Progress {
    /// A new phase: its own label ("restored keys", "pg:main: WAL bytes
    /// replayed"), total, count and clock.
    fn begin(&mut self, what: &str, total: Option<u64>) {
        self.what = what.to_owned();
        self.unit = "";
        match &mut self.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => {
                bar.set_style(style(what, "", total));
                match total {
                    Some(t) => bar.set_length(t),
                    None => bar.unset_length(),
                }
                bar.reset();
            }
            Mode::Plain { started, last, total: t, done } => {
                let now = Instant::now();
                (*started, *last, *t, *done) = (now, now, total, 0);
            }
        }
    }

    fn advance(&mut self, done: u64) {
        self.set(done);
    }

    fn note(&mut self, line: &str) {
        match &self.mode {
            Mode::Bar(bar) => bar.println(format!("tidemark: {line}")),
            _ => eprintln!("tidemark: {line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_has_the_rate_and_the_eta() {
        let line = plain_line("verified", "entries", 100, Some(300), Duration::from_secs(2));
        assert_eq!(line, "verified 100/300 entries (50/s, ETA 4s)");
        assert_eq!(plain_line("read", "lines", 10, None, Duration::from_secs(5)), "read 10 lines (2/s)");
    }
}

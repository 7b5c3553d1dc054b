//! What a person sees of a job's progress: the library reports to a
//! [`ProgressSink`]; here it is drawn. A bar with rate and ETA when stderr is a terminal,
//! a plain line every ten seconds when it is a pipe or a log, no progress with `-q`.
//! Notices (a job waiting for another, a stale lock taken over) are printed in every
//! case: they explain what the job did, and stderr is for diagnostics.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tailor::progress::{ProgressMode, ProgressSink, ProgressTask};

/// How often a line is printed when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(10);

/// The sink for this process's stderr and `-q`.
pub fn mode(quiet: bool) -> ProgressMode {
    static BARS: Bars = Bars;
    static LINES: Lines = Lines;
    static NOTICES: NoticesOnly = NoticesOnly;
    if quiet {
        ProgressMode::Report(&NOTICES)
    } else if std::io::stderr().is_terminal() {
        ProgressMode::Report(&BARS)
    } else {
        ProgressMode::Report(&LINES)
    }
}

fn print_notice(message: &str) {
    eprintln!("tailor: {message}");
}

/// Bars on a terminal.
struct Bars;

impl ProgressSink for Bars {
    fn start(&self, label: &str, total: u64) -> Box<dyn ProgressTask> {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Box::new(BarTask(bar))
    }

    fn notice(&self, message: &str) {
        print_notice(message);
    }
}

struct BarTask(ProgressBar);

impl ProgressTask for BarTask {
    fn advance(&self, done: u64, _total: u64, _elapsed: Duration) {
        self.0.set_position(done);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Periodic lines in a pipe or a log.
struct Lines;

impl ProgressSink for Lines {
    fn start(&self, label: &str, _total: u64) -> Box<dyn ProgressTask> {
        Box::new(LineTask {
            label: label.to_string(),
            last: Mutex::new(Instant::now()),
        })
    }

    fn notice(&self, message: &str) {
        print_notice(message);
    }
}

struct LineTask {
    label: String,
    /// When the last line was printed.
    last: Mutex<Instant>,
}

impl ProgressTask for LineTask {
    fn advance(&self, done: u64, total: u64, elapsed: Duration) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= LINE_INTERVAL {
            *last = Instant::now();
            eprintln!("{}", line(&self.label, done, total, elapsed));
        }
    }

    fn finish(&self) {}
}

/// `label: done/total (rate items/s, ETA s)`.
fn line(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    let eta = if rate > 0.0 {
        total.saturating_sub(done) as f64 / rate
    } else {
        f64::NAN
    };
    format!("{label}: {done}/{total} ({rate:.1} items/s, ETA {eta:.0} s)")
}

/// `-q`: no progress, notices only.
struct NoticesOnly;

struct Silent;

impl ProgressTask for Silent {
    fn advance(&self, _: u64, _: u64, _: Duration) {}
    fn finish(&self) {}
}

impl ProgressSink for NoticesOnly {
    fn start(&self, _label: &str, _total: u64) -> Box<dyn ProgressTask> {
        Box::new(Silent)
    }

    fn notice(&self, message: &str) {
        print_notice(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_count_rate_and_eta() {
        let l = line("embed", 50, 100, Duration::from_secs(10));
        assert_eq!(l, "embed: 50/100 (5.0 items/s, ETA 10 s)");
    }
}

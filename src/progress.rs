//! Progress reporting for long jobs: a bar with rate and ETA on a terminal, plain
//! periodic lines when stderr is a pipe or a log, nothing when quiet.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How a job reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bar on a terminal, periodic lines otherwise.
    Auto,
    /// Never print.
    Quiet,
}

/// A progress reporter that is cheap to call from many threads.
pub struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    start: Instant,
    bar: Option<ProgressBar>,
    /// For non-terminal output: when the last line was printed.
    last_line: Option<Mutex<Instant>>,
}

const LINE_INTERVAL: Duration = Duration::from_secs(10);

impl Progress {
    pub fn new(label: &str, total: u64, mode: ProgressMode) -> Self {
        let (bar, last_line) = match mode {
            ProgressMode::Quiet => (None, None),
            ProgressMode::Auto if std::io::stderr().is_terminal() => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
                bar.set_message(label.to_string());
                (Some(bar), None)
            }
            ProgressMode::Auto => (None, Some(Mutex::new(Instant::now()))),
        };
        Progress {
            label: label.to_string(),
            total,
            done: AtomicU64::new(0),
            start: Instant::now(),
            bar,
            last_line,
        }
    }

    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if let Some(last) = &self.last_line {
            let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= LINE_INTERVAL {
                *last = Instant::now();
                eprintln!("{}", self.line(done));
            }
        }
    }

    fn line(&self, done: u64) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 {
            (self.total.saturating_sub(done)) as f64 / rate
        } else {
            f64::NAN
        };
        format!(
            "{}: {done}/{} ({:.1} items/s, ETA {:.0} s)",
            self.label, self.total, rate, eta
        )
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

//! Progress of long jobs, reported, never drawn: the library counts and tells a
//! [`ProgressSink`]; whoever called it decides what a person sees. The command line
//! draws a bar on a terminal, periodic lines in a pipe or a log, and nothing with `-q`
//! (see `src/cli/progress.rs`); tests and benchmarks pass [`ProgressMode::Quiet`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Receives what long jobs report. Implementations are shared by every job of a process
/// (hence `'static` in [`ProgressMode`]) and called from many threads.
pub trait ProgressSink: Send + Sync {
    /// A counted task starts (`total` steps); its updates go to the returned handle.
    fn start(&self, label: &str, total: u64) -> Box<dyn ProgressTask>;

    /// Something a person should know while the job runs (waiting for another job,
    /// taking over a stale lock, starting over); jobs also return their notices.
    fn notice(&self, message: &str);
}

/// One counted task of a [`ProgressSink`].
pub trait ProgressTask: Send + Sync {
    /// `done` of `total` steps are finished (`done` only grows); `elapsed` since the start.
    fn advance(&self, done: u64, total: u64, elapsed: Duration);

    /// The task is over (successfully or not).
    fn finish(&self);
}

/// Where a job reports: nowhere, or a sink.
#[derive(Clone, Copy)]
pub enum ProgressMode {
    /// Report nothing (tests, benchmarks, library callers that want silence).
    Quiet,
    /// Report to this sink.
    Report(&'static dyn ProgressSink),
}

impl ProgressMode {
    /// Tells the sink a notice (nothing when quiet).
    pub fn notice(&self, message: &str) {
        if let ProgressMode::Report(sink) = self {
            sink.notice(message);
        }
    }

    pub fn is_quiet(&self) -> bool {
        matches!(self, ProgressMode::Quiet)
    }
}

impl fmt::Debug for ProgressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProgressMode::Quiet => "Quiet",
            ProgressMode::Report(_) => "Report",
        })
    }
}

/// A counted task, cheap to advance from many threads.
pub struct Progress {
    total: u64,
    done: AtomicU64,
    start: Instant,
    task: Option<Box<dyn ProgressTask>>,
}

impl Progress {
    pub fn new(label: &str, total: u64, mode: ProgressMode) -> Self {
        let task = match mode {
            ProgressMode::Quiet => None,
            ProgressMode::Report(sink) => Some(sink.start(label, total)),
        };
        Progress {
            total,
            done: AtomicU64::new(0),
            start: Instant::now(),
            task,
        }
    }

    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(task) = &self.task {
            task.advance(done, self.total, self.start.elapsed());
        }
    }

    pub fn finish(&self) {
        if let Some(task) = &self.task {
            task.finish();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what it is told.
    struct Recorder(Mutex<Vec<String>>);
    struct RecorderTask;

    impl ProgressSink for Recorder {
        fn start(&self, label: &str, total: u64) -> Box<dyn ProgressTask> {
            self.0
                .lock()
                .unwrap()
                .push(format!("start {label} {total}"));
            Box::new(RecorderTask)
        }
        fn notice(&self, message: &str) {
            self.0.lock().unwrap().push(format!("notice {message}"));
        }
    }
    impl ProgressTask for RecorderTask {
        fn advance(&self, done: u64, total: u64, _: Duration) {
            RECORDER.0.lock().unwrap().push(format!("{done}/{total}"));
        }
        fn finish(&self) {
            RECORDER.0.lock().unwrap().push("finish".into());
        }
    }
    static RECORDER: Recorder = Recorder(Mutex::new(Vec::new()));

    #[test]
    fn a_task_reports_counts_and_notices_to_its_sink_and_quiet_reports_nothing() {
        let mode = ProgressMode::Report(&RECORDER);
        let p = Progress::new("job", 3, mode);
        p.inc(1);
        p.inc(2);
        p.finish();
        mode.notice("hello");
        let q = Progress::new("silent", 3, ProgressMode::Quiet);
        q.inc(3);
        ProgressMode::Quiet.notice("unheard");
        assert_eq!(
            *RECORDER.0.lock().unwrap(),
            ["start job 3", "1/3", "3/3", "finish", "notice hello"]
        );
    }
}

//! How a failed command is reported: each cause once, in words (never Rust's debug
//! text), on stderr; with `--json`, also as one object on stdout with the same exit code.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;

/// Exit code of a check that found problems (`catalog check`, `index verify`).
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit code of an error: bad arguments, unreadable or invalid input, a failed command.
pub const EXIT_ERROR: u8 = 2;

#[derive(Serialize)]
struct JsonError<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    /// What went wrong, as a stable word (see the README's table).
    kind: &'a str,
    message: &'a str,
    /// The file or directory concerned, when there is one.
    path: Option<String>,
    /// The line in `path`, for parse errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
}

/// The message of an error chain with each cause once: a cause whose text the message
/// already holds (an `Io` error's Display includes its source) is not repeated.
pub fn message(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

/// The error's kind, path and line, from the library error in its chain.
fn classify(err: &anyhow::Error) -> (&'static str, Option<String>, Option<usize>) {
    use tailor::Error as E;
    let path = |p: &std::path::Path| Some(p.display().to_string());
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<E>() {
            return match e {
                E::Io { path: p, .. } => ("io", path(p), None),
                E::Parse { path: p, line, .. } => ("parse", path(p), Some(*line)),
                E::Invalid { path: p, .. } => ("invalid", path(p), None),
                E::Corrupted { path: p, .. } => ("corrupted", path(p), None),
                E::IncompatibleVersion { path: p, .. } => ("incompatible_version", path(p), None),
                E::DimensionMismatch { .. } => ("dimension_mismatch", None, None),
                E::UnknownAttribute { .. } => ("unknown_attribute", None, None),
                E::UnknownItem { .. } => ("unknown_item", None, None),
                E::Image { path: p, .. } => ("image", path(p), None),
                E::Model(_) => ("model", None, None),
                E::Usage(_) => ("usage", None, None),
                E::Locked { dir } => ("locked", path(dir), None),
                E::JobBusy { work_dir, .. } => ("job_busy", path(work_dir), None),
                E::TooManyRejects { catalog, .. } => ("invalid", path(catalog), None),
            };
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return ("io", None, None);
        }
    }
    ("error", None, None)
}

fn print_json(kind: &str, message: &str, path: Option<String>, line: Option<usize>) {
    let body = JsonError {
        error: ErrorBody {
            kind,
            message,
            path,
            line,
        },
    };
    let mut out = std::io::stdout().lock();
    // Nothing more can be done if stdout is gone; stderr still has the message.
    let _ = serde_json::to_writer(&mut out, &body);
    let _ = writeln!(out);
}

/// Reports a failed command on stderr, and as JSON on stdout with `--json`.
pub fn report(err: &anyhow::Error, json: bool) {
    let msg = message(err);
    eprintln!("tailor: error: {msg}");
    if json {
        let (kind, path, line) = classify(err);
        print_json(kind, &msg, path, line);
    }
}

/// A command line clap refused: its usual text (help and version exit 0), and with
/// `--json` one error object on stdout; the exit code is 2 either way.
pub fn usage(err: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if json && !informational {
        let text = err.render().to_string();
        // clap's first line holds the reason; the rest is usage help (kept on stderr).
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid arguments")
            .trim_start_matches("error: ")
            .to_string();
        print_json("usage", &first, None, None);
        let _ = err.print();
        return ExitCode::from(EXIT_ERROR);
    }
    let _ = err.print();
    ExitCode::from(err.exit_code().clamp(0, 255) as u8)
}

/// A library error with the flag a person can change added after it: the library speaks
/// of values, the command line knows which flag set them.
#[derive(Debug)]
pub struct FlagHint {
    source: tailor::Error,
    hint: &'static str,
}

impl std::fmt::Display for FlagHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; {}", self.source, self.hint)
    }
}

impl std::error::Error for FlagHint {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The error, with the flag that would change the outcome where there is one.
pub fn flag_hint(err: tailor::Error) -> anyhow::Error {
    let hint = match &err {
        tailor::Error::JobBusy { .. } => "pass --wait to wait for it",
        tailor::Error::TooManyRejects { .. } => "--max-reject-rate sets the allowed share",
        _ => return err.into(),
    };
    FlagHint { source: err, hint }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(2);
        let err = anyhow::Error::new(tailor::Error::io("nope.npy", io));
        let msg = message(&err);
        assert_eq!(msg.matches("No such file or directory").count(), 1, "{msg}");
        assert!(msg.starts_with("nope.npy: "), "{msg}");
        let err = err.context("cannot read vectors");
        assert_eq!(
            message(&err),
            "cannot read vectors: nope.npy: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn kinds_and_paths_come_from_the_library_error() {
        let err = anyhow::Error::new(tailor::Error::parse("m.csv", 3, "bad"));
        assert_eq!(
            classify(&err),
            ("parse", Some("m.csv".to_string()), Some(3))
        );
        let err = anyhow::anyhow!("plain");
        assert_eq!(classify(&err), ("error", None, None));
    }
}

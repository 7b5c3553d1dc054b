//! The `tailor` command line: parse, run one command, print once.
//!
//! Exit codes (the README's table): 0 success (a search that finds nothing included),
//! 1 a check found problems (`catalog check`, `index verify`), 2 an error (bad arguments,
//! unreadable or invalid input, a failed command). With `--json`, an error is also one
//! JSON object on stdout: `{"error": {"kind", "message", "path"}}`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `println!` into a closed pipe (`tailor index info | head`)
    // panicked. Restore the default: the process ends quietly, like other Unix tools.
    #[cfg(unix)]
    // SAFETY: called before any other thread exists; only resets a signal disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Known before parsing, so that a usage error can be reported as JSON too.
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) => return cli::errors::usage(err, json),
    };
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            cli::errors::report(&err, json);
            ExitCode::from(cli::errors::EXIT_ERROR)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(
                e.downcast_ref::<tailor::Error>(),
                Some(tailor::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe
            )
    })
}

//! Failpoints for crash and error tests (the `failpoints` cargo feature, as tantivy does
//! it): a named point in a writer returns an injected error or aborts the process when a
//! test armed it. Without the feature, [`crate::failpoint!`] expands to `Ok(())` and
//! nothing here is compiled, so release builds read no environment variable and carry no
//! test hook.
//!
//! Points are armed in-process with [`arm`] (tests of the library), or for a child
//! process through `TAILOR_FAILPOINTS=name=action[;name=action...]`, read once at the
//! first evaluated point (tests of the CLI). Actions: `enospc` (fail with "No space left
//! on device"), `enospc@N` (let N hits pass, then fail), `abort` / `abort@N` (abort the
//! process, like a kill).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// What an armed point does when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Return an I/O error "No space left on device" (ENOSPC) naming the point.
    NoSpace,
    /// Abort the process (no destructors, no cleanup: like `kill -9`).
    Abort,
}

#[derive(Debug, Clone, Copy)]
struct Armed {
    action: Action,
    /// Hits to let pass before acting.
    skip: usize,
}

fn registry() -> &'static Mutex<HashMap<String, Armed>> {
    static POINTS: OnceLock<Mutex<HashMap<String, Armed>>> = OnceLock::new();
    POINTS.get_or_init(|| {
        let mut points = HashMap::new();
        if let Ok(spec) = std::env::var("TAILOR_FAILPOINTS") {
            for item in spec.split(';').filter(|s| !s.is_empty()) {
                if let Some((name, action)) = parse(item) {
                    points.insert(name, action);
                }
            }
        }
        Mutex::new(points)
    })
}

fn parse(item: &str) -> Option<(String, Armed)> {
    let (name, action) = item.split_once('=')?;
    let (action, skip) = match action.split_once('@') {
        Some((a, n)) => (a, n.parse().ok()?),
        None => (action, 0),
    };
    let action = match action {
        "enospc" => Action::NoSpace,
        "abort" => Action::Abort,
        _ => return None,
    };
    Some((name.to_string(), Armed { action, skip }))
}

/// Arms `name`: it lets `skip` hits pass, then acts on every later hit until [`disarm`].
pub fn arm(name: &str, action: Action, skip: usize) {
    let mut points = registry().lock().unwrap_or_else(|e| e.into_inner());
    points.insert(name.to_string(), Armed { action, skip });
}

pub fn disarm(name: &str) {
    let mut points = registry().lock().unwrap_or_else(|e| e.into_inner());
    points.remove(name);
}

/// Disarms every point.
pub fn disarm_all() {
    registry().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Evaluates the point `name` (through [`crate::failpoint!`]).
pub fn eval(name: &str) -> Result<()> {
    let action = {
        let mut points = registry().lock().unwrap_or_else(|e| e.into_inner());
        let Some(armed) = points.get_mut(name) else {
            return Ok(());
        };
        if armed.skip > 0 {
            armed.skip -= 1;
            return Ok(());
        }
        armed.action
    };
    match action {
        Action::NoSpace => Err(Error::io(
            format!("failpoint {name}"),
            std::io::Error::from_raw_os_error(28),
        )),
        Action::Abort => std::process::abort(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions() {
        let (n, a) = parse("index::write=enospc@3").unwrap();
        assert_eq!(
            (n.as_str(), a.action, a.skip),
            ("index::write", Action::NoSpace, 3)
        );
        assert_eq!(parse("x=abort").unwrap().1.action, Action::Abort);
        assert!(parse("x=explode").is_none());
        assert!(parse("x").is_none());
    }

    #[test]
    fn armed_point_fails_after_skipping() {
        arm("unit::point", Action::NoSpace, 1);
        assert!(eval("unit::point").is_ok());
        let err = eval("unit::point").unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        disarm("unit::point");
        assert!(eval("unit::point").is_ok());
    }
}

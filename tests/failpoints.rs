//! Writers that fail (a full disk, a crash before the commit) leave the index as it was
//! and no partial files behind, so the next writer succeeds. Needs the `failpoints`
//! feature: `cargo test --locked --features failpoints --test failpoints` (in `.ci/run`).

mod common;

use std::path::Path;
use std::sync::Mutex;

use common::*;
use tailor::failpoints::{self, Action};
use tailor::index::{self, CompactKind, Index};
use tailor::progress::ProgressMode;

/// The failpoint registry is process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn is_enospc(e: &tailor::Error) -> bool {
    matches!(e, tailor::Error::Io { source, .. } if source.raw_os_error() == Some(28))
}

fn assert_clean(dir: &Path, before: &[String]) {
    failpoints::disarm_all();
    assert_eq!(listing(dir), before, "partial files left behind");
    let ix = Index::open(dir).unwrap();
    assert!(ix.verify().unwrap().ok);
}

#[test]
fn enospc_while_writing_leaves_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    failpoints::disarm_all();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ix");
    build(&dir, 150, "item", 1);
    let before = listing(&dir);

    // The disk fills up part-way through each writer's files, at several depths.
    for skip in [0, 3, 40] {
        failpoints::arm("index::write", Action::NoSpace, skip);
        let err = add(&dir, 20, "new", 2).unwrap_err();
        assert!(is_enospc(&err), "{err:?}");
        assert_clean(&dir, &before);

        // A tombstone file is two writes (header, bits).
        failpoints::arm("index::write", Action::NoSpace, skip.min(1));
        let err = index::remove(&dir, &["item3".to_string()]).unwrap_err();
        assert!(is_enospc(&err), "{err:?}");
        assert_clean(&dir, &before);
    }
    index::remove(&dir, &["item4".to_string()]).unwrap();
    let before = listing(&dir);
    failpoints::arm("index::write", Action::NoSpace, 5);
    let err = index::compact(&dir, ProgressMode::Quiet).unwrap_err();
    assert!(is_enospc(&err), "{err:?}");
    assert_clean(&dir, &before);
    assert!(
        !tmp.path().join("ix.merge-work").exists(),
        "staging left behind"
    );

    // A fresh build over the existing index fails the same way.
    failpoints::arm("index::write", Action::NoSpace, 2);
    let err = std::panic::catch_unwind(|| build(&dir, 10, "other", 3));
    assert!(err.is_err());
    assert_clean(&dir, &before);

    // Space again: the next writers succeed.
    failpoints::disarm_all();
    add(&dir, 20, "new", 2).unwrap();
    index::remove(&dir, &["item3".to_string()]).unwrap();
    index::compact(&dir, ProgressMode::Quiet).unwrap();
    let ix = Index::open(&dir).unwrap();
    assert_eq!(ix.len(), 150 + 20 - 2);
    assert!(ix.verify().unwrap().ok);
}

#[test]
fn failure_before_the_commit_keeps_the_previous_index() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    failpoints::disarm_all();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ix");
    build(&dir, 120, "item", 4);
    for point in [
        "index::before_commit",
        "fsio::before_rename",
        "index::merge_staged",
    ] {
        failpoints::arm(point, Action::NoSpace, 0);
        let out = tmp.path().join("merged");
        let err = index::merge(
            &out,
            std::slice::from_ref(&dir),
            &params(CompactKind::F16),
            ProgressMode::Quiet,
        )
        .unwrap_err();
        assert!(is_enospc(&err), "{point}: {err:?}");
        // Only the (empty) lock file is left in the new directory, and no staging.
        assert_eq!(listing(&out), vec!["writer.lock".to_string()], "{point}");
        assert!(!tmp.path().join("merged.merge-work").exists(), "{point}");

        failpoints::disarm(point);
    }
    // add and compact fail just before (or at) the manifest's rename: the previous
    // index is untouched, byte for byte.
    index::remove(&dir, &["item9".to_string()]).unwrap();
    let before = snapshot(&dir);
    for point in ["index::before_commit", "fsio::before_rename"] {
        failpoints::arm(point, Action::NoSpace, 0);
        let err = add(&dir, 5, "new", 5).unwrap_err();
        assert!(is_enospc(&err), "{point}: {err:?}");
        let err = index::compact(&dir, ProgressMode::Quiet).unwrap_err();
        assert!(is_enospc(&err), "{point}: {err:?}");
        failpoints::disarm(point);
        assert_eq!(snapshot(&dir), before, "{point}");
    }
    failpoints::disarm_all();
    assert!(Index::open(&dir).unwrap().verify().unwrap().ok);
}

//! The golden index: `fixtures/index_v2/` was written by tailor at index format version 2
//! (labels, an int8 compact copy, tombstones). Every later version must open it, verify
//! it and search it to the stored results in `fixtures/index_v2/expected.json` (as
//! tantivy's `test_format_N` does). A format change adds `fixtures/index_v<N>/` beside
//! it and keeps this one.
//!
//! Regenerate (only when the format version is bumped, into a new directory):
//! `TAILOR_WRITE_GOLDEN=fixtures/index_vN cargo test --test golden -- --ignored write_golden_index`

mod common;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tailor::index::{self, Index};
use tailor::query::{self, LabelFilter, Query, Target, Weighted};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Case {
    /// Query item and weighted attributes (`name` or `name=weight`).
    item: String,
    attrs: Vec<String>,
    exact: bool,
    filter: Vec<String>,
    /// Expected results: (id, score).
    hits: Vec<(String, f32)>,
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/index_v2")
}

fn queries() -> Vec<(String, Vec<String>, bool, Vec<String>)> {
    let mut out = Vec::new();
    for (i, item) in ["item0", "item7", "item23", "item41"].iter().enumerate() {
        for exact in [false, true] {
            out.push((item.to_string(), vec!["shape".into()], exact, vec![]));
            out.push((
                item.to_string(),
                vec!["shape".into(), "texture=0.5".into()],
                exact,
                if i % 2 == 0 {
                    vec!["category=shirt".into(), "category=skirt".into()]
                } else {
                    vec![]
                },
            ));
        }
    }
    out
}

fn run(
    ix: &Index,
    item: &str,
    attrs: &[String],
    exact: bool,
    filter: &[String],
) -> Vec<(String, f32)> {
    let q = Query {
        target: Target::Item(item.into()),
        attrs: attrs.iter().map(|a| Weighted::parse(a).unwrap()).collect(),
        k: 6,
        ef: 32,
        exact,
        filter: (!filter.is_empty()).then(|| LabelFilter::parse(ix, filter).unwrap()),
        include_self: false,
    };
    query::search(ix, &q)
        .unwrap()
        .into_iter()
        .map(|h| (h.id, h.score))
        .collect()
}

#[test]
fn golden_index_v2_opens_verifies_and_searches_to_the_stored_results() {
    let dir = fixture();
    let report = index::verify_dir(&dir).unwrap();
    assert!(report.ok, "{:?}", report.problems);
    let ix = Index::open(&dir).unwrap();
    assert!(ix.verify().unwrap().ok);
    assert_eq!(ix.manifest().format_version, 2);
    assert_eq!((ix.len(), ix.live_len()), (60, 57));
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(cases.len(), queries().len());
    for c in &cases {
        let got = run(&ix, &c.item, &c.attrs, c.exact, &c.filter);
        let ids: Vec<&str> = got.iter().map(|h| h.0.as_str()).collect();
        let want: Vec<&str> = c.hits.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(ids, want, "{c:?}");
        for (g, w) in got.iter().zip(&c.hits) {
            assert!((g.1 - w.1).abs() <= 1e-6, "{c:?}: score {} != {}", g.1, w.1);
        }
    }
}

/// Writes a golden index and its expected results into `$TAILOR_WRITE_GOLDEN`.
#[test]
#[ignore]
fn write_golden_index() {
    let Ok(out) = std::env::var("TAILOR_WRITE_GOLDEN") else {
        panic!("set TAILOR_WRITE_GOLDEN to the directory to write (e.g. fixtures/index_v3)");
    };
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(out);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ix");
    common::build(&dir, 60, "item", 17);
    let removed: Vec<String> = ["item3", "item30", "item59"].map(String::from).to_vec();
    index::remove(&dir, &removed).unwrap();
    let ix = Index::open(&dir).unwrap();
    let cases: Vec<Case> = queries()
        .into_iter()
        .map(|(item, attrs, exact, filter)| Case {
            hits: run(&ix, &item, &attrs, exact, &filter),
            item,
            attrs,
            exact,
            filter,
        })
        .collect();
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name != index::WRITER_LOCK_FILE {
            std::fs::copy(e.path(), out.join(name)).unwrap();
        }
    }
    let json = serde_json::to_string_pretty(&cases).unwrap();
    std::fs::write(out.join("expected.json"), json + "\n").unwrap();
}

//! Catalog readers on generated data and on the malformed fixtures; the generator's
//! determinism; the `catalog` and `synth` commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tailor::catalog::{self, synth, CatalogFormat};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn generate(dir: &Path, items: usize, seed: u64) {
    let opts = synth::SynthOptions {
        items,
        size: 32,
        seed,
        jpeg: false,
    };
    synth::generate(dir, &opts, tailor::progress::ProgressMode::Quiet).unwrap();
}

/// Every file below `dir`, relative path -> bytes.
fn tree(dir: &Path) -> HashMap<PathBuf, Vec<u8>> {
    let mut out = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn synth_is_deterministic_for_a_seed() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(a.path(), 60, 11);
    generate(b.path(), 60, 11);
    generate(c.path(), 60, 12);
    let (ta, tb, tc) = (tree(a.path()), tree(b.path()), tree(c.path()));
    assert!(ta.len() > 60 + 10, "images plus split files: {}", ta.len());
    assert_eq!(ta, tb, "same seed, same bytes");
    let img = PathBuf::from("SynthFashion/images/000000.png");
    assert_ne!(ta[&img], tc[&img], "another seed draws another image");
}

#[test]
fn bundled_fixture_matches_the_generator() {
    // fixtures/synth-small was written by `tailor synth --items 240 --size 32 --seed 7`.
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 240, 7);
    let fresh = tree(dir.path());
    let bundled = tree(&fixtures().join("synth-small"));
    assert_eq!(fresh.len(), bundled.len());
    for (path, bytes) in &fresh {
        assert!(
            bundled.get(path) == Some(bytes),
            "{} differs from the generator's output",
            path.display()
        );
    }
}

#[test]
fn every_reader_agrees_on_generated_data() {
    let dir = tempfile::tempdir().unwrap();
    let (n, seed) = (200, 5);
    generate(dir.path(), n, seed);
    let csv = catalog::open(&dir.path().join("manifest.csv")).unwrap();
    let jsonl = catalog::open(&dir.path().join("manifest.jsonl")).unwrap();
    let asen = catalog::open(&dir.path().join("SynthFashion")).unwrap();
    assert_eq!(
        catalog::open(dir.path()).unwrap().format,
        CatalogFormat::Csv,
        "the manifest wins"
    );
    let zappos = catalog::open(&dir.path().join("zappos")).unwrap();
    assert_eq!(
        (csv.format, jsonl.format, asen.format, zappos.format),
        (
            CatalogFormat::Csv,
            CatalogFormat::Jsonl,
            CatalogFormat::Asen,
            CatalogFormat::Zappos
        )
    );
    for cat in [&csv, &jsonl, &asen, &zappos] {
        assert_eq!(cat.items.len(), n);
        for i in 0..n {
            assert!(
                cat.image_path(i).is_file(),
                "{}",
                cat.image_path(i).display()
            );
        }
    }
    assert_eq!(csv.schema, synth::schema());
    assert_eq!(jsonl.schema, synth::schema());
    assert_eq!(asen.schema, synth::schema());
    assert_eq!(zappos.schema.names(), synth::schema().names());

    // Labels: every item has every attribute, as drawn.
    let truth: Vec<[u16; 7]> = (0..n).map(|i| synth::item_values(seed, i)).collect();
    let csv_index = |id: &str| id.trim_start_matches("sf-").parse::<usize>().unwrap();
    for cat in [&csv, &jsonl] {
        for (row, item) in cat.items.iter().enumerate() {
            let i = csv_index(&item.id);
            for (a, &value) in truth[i].iter().enumerate() {
                assert_eq!(cat.labels.get(row, a), Some(value));
            }
        }
    }
    let asen_index = |id: &str| {
        id.trim_start_matches("images/")
            .trim_end_matches(".png")
            .parse::<usize>()
            .unwrap()
    };
    for (row, item) in asen.items.iter().enumerate() {
        let i = asen_index(&item.id);
        let train = asen.splits.items["train"].contains(&row);
        for (a, &value) in truth[i].iter().enumerate() {
            // Train items carry every label; valid/test items carry labels through the
            // query/candidate lists, which list every (item, attribute) pair.
            assert_eq!(
                asen.labels.get(row, a),
                Some(value),
                "item {} attr {a} (train: {train})",
                item.id
            );
        }
    }

    // Splits 8:1:1, and the ASEN query/candidate files equal the manifest's rule.
    for cat in [&csv, &asen] {
        assert_eq!(cat.splits.items["train"].len(), 160);
        assert_eq!(cat.splits.items["valid"].len(), 20);
        assert_eq!(cat.splits.items["test"].len(), 20);
    }
    for split in ["valid", "test"] {
        let key =
            |cat: &catalog::Catalog, refs: &[catalog::LabelledRef], by: &dyn Fn(&str) -> usize| {
                let mut v: Vec<(usize, usize, u16)> = refs
                    .iter()
                    .map(|r| (by(&cat.items[r.item].id), r.attribute, r.value))
                    .collect();
                v.sort_unstable();
                v
            };
        let (cq, cc) = csv.eval_split(split).unwrap();
        let (aq, ac) = asen.eval_split(split).unwrap();
        assert!(!cq.is_empty() && !cc.is_empty());
        assert_eq!(key(&csv, cq, &csv_index), key(&asen, aq, &asen_index));
        assert_eq!(key(&csv, cc, &csv_index), key(&asen, ac, &asen_index));
        assert_eq!(cq.len() + cc.len(), 20 * 7);
    }

    // Triplets: (a, far, close) with close sharing a's value and far not.
    assert_eq!(zappos.triplets.len(), 7 * 3);
    for list in &zappos.triplets {
        assert!(!list.triplets.is_empty());
        for &[x, far, close] in &list.triplets {
            let v = |k: usize| truth[k][list.attribute];
            assert_eq!(v(x), v(close));
            assert_ne!(v(x), v(far));
            assert_ne!(x, close);
        }
    }
}

fn error_of(path: &Path) -> String {
    catalog::open(path)
        .expect_err("malformed catalog must be refused")
        .to_string()
}

#[test]
fn malformed_catalogs_are_refused_with_file_line_and_reason() {
    let m = fixtures().join("malformed");
    let cases: &[(&str, &[&str])] = &[
        (
            "asen-unknown-attribute/Toy",
            &["label_train.txt:2:", "unknown attribute 5", "2 attributes"],
        ),
        (
            "asen-value-out-of-range/Toy",
            &[
                "label_train.txt:2:",
                "value 3 out of range",
                "\"sleeve\" (3 values)",
            ],
        ),
        (
            "asen-index-past-end/Toy",
            &[
                "query_test.txt:2:",
                "image index 2 is past the end of the filenames list (2 entries)",
            ],
        ),
        (
            "asen-malformed-line/Toy",
            &[
                "candidate_test.txt:2:",
                "expected `img_idx attr value`",
                "\"0 1\"",
            ],
        ),
        (
            "asen-duplicate-image/Toy",
            &[
                "filenames_train.txt:3:",
                "duplicate image \"a.png\" (first listed on line 1)",
            ],
        ),
        (
            "manifest-duplicate-id.csv",
            &[
                "manifest-duplicate-id.csv:4:",
                "duplicate id \"x1\" (first on line 2)",
            ],
        ),
        (
            "manifest-unknown-value/manifest.csv",
            &[
                "manifest.csv:3:",
                "value \"medium\" is not a value of \"sleeve\"",
                "short, long",
            ],
        ),
        (
            "manifest-ragged.csv",
            &["manifest-ragged.csv:3:", "3 fields, the header has 4"],
        ),
        (
            "manifest-bad.jsonl",
            &["manifest-bad.jsonl:3:", "malformed JSON"],
        ),
        (
            "zappos-index-past-end",
            &[
                "heel_tripletlist_train.txt:2:",
                "image index 3 is past the end of filenames.json (3 entries)",
            ],
        ),
    ];
    for (path, expected) in cases {
        let err = error_of(&m.join(path));
        for e in *expected {
            assert!(
                err.contains(e),
                "{path}: error {err:?} should contain {e:?}"
            );
        }
    }
    let err = error_of(&m.join("no-such-catalog"));
    assert!(
        err.contains("no-such-catalog") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn valid_toy_asen_catalog_reads_as_listed() {
    let cat = catalog::open(&fixtures().join("malformed/asen-valid/Toy")).unwrap();
    assert_eq!(cat.items.len(), 5);
    assert_eq!(cat.schema.names(), ["sleeve", "collar"]);
    assert_eq!(cat.schema.attributes[0].values, ["0", "1", "2"]);
    let b = cat.item_index("b.png").unwrap();
    assert_eq!(
        (cat.labels.get(b, 0), cat.labels.get(b, 1)),
        (Some(2), Some(0))
    );
    let (q, c) = cat.eval_split("test").unwrap();
    assert_eq!((q.len(), c.len()), (1, 2));
    assert!(cat.eval_split("valid").is_err());
}

fn tailor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn catalog_check_and_stats_commands() {
    let small = fixtures().join("synth-small");
    let ok = tailor(&["catalog", "check", small.to_str().unwrap()]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let missing = tailor(&[
        "catalog",
        "check",
        "--json",
        fixtures()
            .join("malformed/manifest-missing-image.csv")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(report["missing_images"][0]["item"], "x1");

    let bad = tailor(&[
        "catalog",
        "stats",
        fixtures()
            .join("malformed/manifest-ragged.csv")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("manifest-ragged.csv:3:"));

    let stats = tailor(&[
        "catalog",
        "stats",
        "--json",
        small.join("manifest.csv").to_str().unwrap(),
    ]);
    assert_eq!(stats.status.code(), Some(0));
    let s: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(s["items"], 240);
    assert_eq!(s["attributes"].as_array().unwrap().len(), 7);
    assert_eq!(s["splits"]["test"]["items"], 24);
}

#[test]
fn unreadable_image_is_reported_by_check() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 20, 1);
    std::fs::write(
        dir.path().join("SynthFashion/images/000003.png"),
        b"not a png",
    )
    .unwrap();
    std::fs::write(dir.path().join("SynthFashion/images/000004.png"), b"").unwrap();
    let cat = catalog::open(&dir.path().join("manifest.csv")).unwrap();
    let report = catalog::check::check(&cat);
    let bad: Vec<&str> = report
        .unreadable_images
        .iter()
        .map(|p| p.item.as_str())
        .collect();
    assert_eq!(bad, ["sf-000003", "sf-000004"]);
    assert!(!report.ok());
}

/// Value ids are u16 with 0xFFFF meaning "not labelled": an attribute with more than
/// 65,535 values is refused, not wrapped into other values.
#[test]
fn attribute_with_too_many_values_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |values: usize| {
        let path = dir.path().join(format!("m{values}.csv"));
        let mut text = String::from("id,image,brand\n");
        for i in 0..values {
            text.push_str(&format!("i{i},img/{i}.png,b{i}\n"));
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let ok = catalog::open(&write(65_535)).unwrap();
    assert_eq!(ok.schema.attributes[0].values.len(), 65_535);
    // The highest value id is 65534, one below the "not labelled" marker.
    let ids = (0..65_535).filter_map(|i| ok.labels.get(i, 0));
    assert_eq!((ids.clone().count(), ids.max()), (65_535, Some(65_534)));
    let path = write(65_536);
    let err = error_of(&path);
    assert!(
        err.contains("m65536.csv") && err.contains("\"brand\" has 65536 values"),
        "{err}"
    );
}

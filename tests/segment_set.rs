//! Segment sets: a set searches and evaluates exactly like one index of the same vectors;
//! info, verify, export and merge over a set; every kind of bad set refused, naming the
//! segment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::{Rng, SeedableRng};
use tailor::catalog::{Attribute, Labels, Schema};
use tailor::embed::Shard;
use tailor::index::set::{prepare_segment, segment_name};
use tailor::index::{self, AttributeInput, BuildInput, BuildParams, Index, IndexSet, ItemLabels};
use tailor::progress::ProgressMode;
use tailor::query::{self, LabelFilter, Query, Target, Weighted};

const DIM: usize = 16;
const ATTRS: [&str; 2] = ["shape", "tone"];

fn tailor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn schema() -> Schema {
    Schema {
        attributes: vec![
            Attribute {
                name: "shape".into(),
                values: vec!["round".into(), "square".into(), "oval".into()],
            },
            Attribute {
                name: "tone".into(),
                values: vec!["light".into(), "dark".into()],
            },
        ],
    }
}

/// Items of a Gaussian mixture per attribute, with labels equal to the cluster.
struct Data {
    ids: Vec<String>,
    vectors: [Vec<f32>; 2],
    labels: Vec<[u16; 2]>,
}

fn data(n: usize, seed: u64) -> Data {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut vectors = [Vec::new(), Vec::new()];
    let mut labels = Vec::new();
    let centres: Vec<Vec<f32>> = (0..5)
        .map(|_| (0..DIM).map(|_| rng.gen_range(-1.0..1.0)).collect())
        .collect();
    for _ in 0..n {
        let mut l = [0u16; 2];
        for (a, v) in vectors.iter_mut().enumerate() {
            let c = rng.gen_range(0..if a == 0 { 3 } else { 2 });
            l[a] = c as u16;
            for c in &centres[c + 3 * a] {
                v.push(c + rng.gen_range(-0.6..0.6));
            }
        }
        labels.push(l);
    }
    Data {
        ids: (0..n).map(|i| format!("item-{i:05}")).collect(),
        vectors,
        labels,
    }
}

/// Builds an index of the rows `rows` of `d` at `dir`.
fn build(dir: &Path, d: &Data, rows: &[usize], identity: &str) {
    let pick = |a: usize| -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| d.vectors[a][r * DIM..(r + 1) * DIM].iter().copied())
            .collect()
    };
    let (v0, v1) = (pick(0), pick(1));
    let mut labels = Labels::new(rows.len(), 2);
    for (i, &r) in rows.iter().enumerate() {
        labels.set(i, 0, Some(d.labels[r][0]));
        labels.set(i, 1, Some(d.labels[r][1]));
    }
    let input = BuildInput {
        ids: rows.iter().map(|&r| d.ids[r].clone()).collect(),
        attributes: vec![
            AttributeInput {
                name: ATTRS[0].into(),
                dim: DIM,
                rows: &v0,
            },
            AttributeInput {
                name: ATTRS[1].into(),
                dim: DIM,
                rows: &v1,
            },
        ],
        labels: Some(ItemLabels {
            schema: schema(),
            labels,
        }),
        model: Some(serde_json::json!({ "identity": identity })),
    };
    index::build(dir, &input, &BuildParams::default(), ProgressMode::Quiet).unwrap();
}

/// Rows of `d` whose ids fall in shard `k` of `n` (as `embed --shard k/n` selects them).
fn shard_rows(d: &Data, k: usize, n: usize) -> Vec<usize> {
    let shard = Shard { index: k, count: n };
    (0..d.ids.len())
        .filter(|&r| shard.contains(&d.ids[r]))
        .collect()
}

/// A set of `n` items in `segments` segments (by the hash of the id), and one index of
/// the same items.
fn set_and_single(root: &Path, n: usize, segments: usize) -> (Data, PathBuf, PathBuf) {
    let d = data(n, 11);
    let set = root.join("set");
    for k in 0..segments {
        let rows = shard_rows(&d, k, segments);
        let dir = prepare_segment(&set, k, segments).unwrap();
        build(&dir, &d, &rows, "model-a");
    }
    let single = root.join("single");
    build(&single, &d, &(0..n).collect::<Vec<_>>(), "model-a");
    (d, set, single)
}

#[test]
fn a_set_searches_and_evaluates_exactly_like_one_index_of_the_same_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let (d, set_dir, single_dir) = set_and_single(dir.path(), 900, 4);
    let set = IndexSet::open(&set_dir).unwrap();
    let single = Index::open(&single_dir).unwrap();
    assert_eq!((set.len(), set.segments().len()), (900, 4));
    assert!(set.missing().is_empty());

    let mut ann_hits = 0;
    for q in (0..900).step_by(37) {
        for a in ATTRS {
            let v = &d.vectors[ATTRS.iter().position(|x| *x == a).unwrap()][q * DIM..(q + 1) * DIM];
            let got = set.search_exact(a, v, 10).unwrap();
            let want = single.search_exact(a, v, 10).unwrap();
            let pairs = |h: &[index::Hit]| -> Vec<(String, u32)> {
                h.iter()
                    .map(|h| (h.id.clone(), h.score.to_bits()))
                    .collect()
            };
            assert_eq!(pairs(&got), pairs(&want), "{a}: exact top-10 of query {q}");
            for h in &got {
                assert_eq!(set.id(h.row), Some(h.id.as_str()), "set rows name the hit");
            }
            let approx = set.search(a, v, 10, 64).unwrap();
            ann_hits += approx
                .iter()
                .filter(|h| want.iter().any(|w| w.id == h.id))
                .count();
        }
    }
    assert!(
        ann_hits as f64 >= 0.9 * 25.0 * 2.0 * 10.0,
        "ANN recall over the set: {ann_hits}"
    );

    // The query engine: weighted, filtered, by item (itself excluded), exact.
    let filter = LabelFilter::parse(&single, &["tone=dark".into()]).unwrap();
    let q = Query {
        target: Target::Item("item-00042".into()),
        attrs: vec![
            Weighted::parse("shape=1").unwrap(),
            Weighted::parse("tone=0.5").unwrap(),
        ],
        k: 10,
        ef: 64,
        exact: true,
        filter: Some(filter),
        include_self: false,
    };
    let got: Vec<(String, u32)> = set
        .query(&q)
        .unwrap()
        .into_iter()
        .map(|h| (h.id, h.score.to_bits()))
        .collect();
    let want: Vec<(String, u32)> = query::search(&single, &q)
        .unwrap()
        .into_iter()
        .map(|h| (h.id, h.score.to_bits()))
        .collect();
    assert_eq!(got, want, "weighted, filtered query by item");
    assert!(!got.iter().any(|(id, _)| id == "item-00042"));

    // Exact MAP through the CLI: identical reports.
    let lists = |name: &str, rows: std::ops::Range<usize>| {
        let mut text = String::new();
        for r in rows {
            for (a, attr) in ATTRS.iter().enumerate() {
                text += &format!("{} {attr} v{}\n", d.ids[r], d.labels[r][a]);
            }
        }
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (queries, candidates) = (lists("q.txt", 0..120), lists("c.txt", 120..900));
    let map = |ix: &Path, ann: bool| -> serde_json::Value {
        let mut args = vec![
            "eval",
            "map",
            "--json",
            "-q",
            "--index",
            s(ix),
            "--queries",
            s(&queries),
            "--candidates",
            s(&candidates),
        ];
        if ann {
            args.push("--ann");
        }
        let mut v: serde_json::Value = serde_json::from_str(&ok(tailor(&args))).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    let (a, b) = (map(&set_dir, false), map(&single_dir, false));
    assert_eq!(a["map"], b["map"]);
    assert_eq!(a["attributes"], b["attributes"], "exact MAP per attribute");
    let ann = map(&set_dir, true);
    assert_eq!(ann["map"], b["map"], "--ann keeps the exact MAP");

    // Triplet accuracy: identical.
    let mut text = String::new();
    for i in 0..200 {
        let (a, b, c) = (
            &d.ids[i],
            &d.ids[(i * 13 + 5) % 900],
            &d.ids[(i * 29 + 7) % 900],
        );
        text += &format!("{a} {b} {c} {}\n", ATTRS[i % 2]);
    }
    let triplets = dir.path().join("triplets.txt");
    std::fs::write(&triplets, text).unwrap();
    let acc = |ix: &Path| -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(&ok(tailor(&[
            "eval",
            "triplets",
            "--json",
            "-q",
            "--index",
            s(ix),
            "--triplets",
            s(&triplets),
        ])))
        .unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    assert_eq!(acc(&set_dir), acc(&single_dir), "triplet accuracy");

    // Search through the CLI on the set: same ids as the single index.
    let cli = |ix: &Path| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&ok(tailor(&[
            "search",
            "--json",
            "--index",
            s(ix),
            "--attr",
            "shape",
            "--item",
            "item-00007",
            "--exact",
            "-k",
            "10",
        ])))
        .unwrap();
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(cli(&set_dir), cli(&single_dir));

    // Export: the same rows, bit for bit (set order: segment by segment).
    let export = |ix: &Path, tag: &str| -> Vec<(String, Vec<u32>)> {
        let (npy, ids) = (
            dir.path().join(format!("{tag}.npy")),
            dir.path().join(format!("{tag}.ids")),
        );
        ok(tailor(&[
            "index",
            "export",
            s(ix),
            "--attr",
            "tone",
            "--out",
            s(&npy),
            "--ids-out",
            s(&ids),
        ]));
        let m = tailor::npy::read_f32_matrix(&npy).unwrap();
        let ids: Vec<String> = std::fs::read_to_string(&ids)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let mut rows: Vec<(String, Vec<u32>)> = ids
            .into_iter()
            .enumerate()
            .map(|(r, id)| (id, m.row(r).iter().map(|x| x.to_bits()).collect()))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(export(&set_dir, "set"), export(&single_dir, "single"));

    // Compaction into one segment: the same exact results.
    let merged = dir.path().join("merged");
    ok(tailor(&[
        "index",
        "merge",
        s(&set_dir),
        "--out",
        s(&merged),
        "-q",
    ]));
    let m = Index::open(&merged).unwrap();
    assert_eq!(m.len(), 900);
    let v = single.vector("shape", 5).unwrap().to_vec();
    let ids = |h: Vec<index::Hit>| h.into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(
        ids(m.search_exact("shape", &v, 10).unwrap()),
        ids(single.search_exact("shape", &v, 10).unwrap())
    );
}

#[test]
fn info_and_verify_list_present_and_missing_segments() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(200, 5);
    let set = dir.path().join("set");
    for k in [3, 1] {
        let rows = shard_rows(&d, k, 4);
        build(&prepare_segment(&set, k, 4).unwrap(), &d, &rows, "m");
    }
    let info: serde_json::Value =
        serde_json::from_str(&ok(tailor(&["index", "info", "--json", s(&set)]))).unwrap();
    assert_eq!(info["segments"], 4);
    assert_eq!(info["present"], serde_json::json!([1, 3]));
    assert_eq!(info["missing"], serde_json::json!([0, 2]));
    assert_eq!(info["items"], 100);
    let text = ok(tailor(&["index", "info", s(&set)]));
    assert!(
        text.contains("2 of 4 present: 1, 3") && text.contains("missing    0, 2"),
        "{text}"
    );

    // Searchable with the segments present, saying which are missing.
    let present_item = d.ids[shard_rows(&d, 1, 4)[0]].clone();
    let out = tailor(&[
        "search",
        "--index",
        s(&set),
        "--attr",
        "shape",
        "--item",
        &present_item,
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("searching 2 of 4 segments; missing: 0, 2"),
        "{err}"
    );

    // verify: the present segments pass, the missing ones fail the check by name.
    let out = tailor(&["index", "verify", s(&set)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("segment 0 (") && text.contains("segment-00000) is missing"),
        "{text}"
    );
    // Compacting a partial set would drop items: refused.
    let out = tailor(&["index", "merge", s(&set), "--out", s(&dir.path().join("m"))]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("segments 0, 2 of 4 are missing"), "{err}");

    for k in [0, 2] {
        let rows = shard_rows(&d, k, 4);
        build(&prepare_segment(&set, k, 4).unwrap(), &d, &rows, "m");
    }
    let text = ok(tailor(&["index", "verify", s(&set)]));
    assert!(text.contains("all checks hold"), "{text}");
}

fn open_err(set: &Path) -> String {
    match IndexSet::open(set) {
        Ok(_) => panic!("{} opened", set.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_sets_are_refused_naming_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(120, 9);
    let part = |k: usize| shard_rows(&d, k, 3);

    // A segment from another model.
    let set = dir.path().join("models");
    build(
        &prepare_segment(&set, 0, 3).unwrap(),
        &d,
        &part(0),
        "model-a",
    );
    build(
        &prepare_segment(&set, 1, 3).unwrap(),
        &d,
        &part(1),
        "model-b",
    );
    let err = open_err(&set);
    assert!(
        err.contains("segment-00001")
            && err.contains("was embedded by model model-b, the set by model-a"),
        "{err}"
    );
    let out = tailor(&[
        "search",
        "--index",
        s(&set),
        "--attr",
        "shape",
        "--item",
        "item-00000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model-b"));

    // The same id in two segments.
    let set = dir.path().join("dup");
    let (zero, two) = (shard_rows(&d, 0, 2), shard_rows(&d, 1, 2));
    build(&prepare_segment(&set, 0, 2).unwrap(), &d, &zero, "m");
    let mut with_twin = two.clone();
    with_twin.push(zero[0]);
    build(&prepare_segment(&set, 1, 2).unwrap(), &d, &with_twin, "m");
    let err = open_err(&set);
    let twin = &d.ids[zero[0]];
    assert!(
        err.contains("segment-00001")
            && err.contains(&format!("item {twin:?} is also in segment"))
            && err.contains("segment-00000"),
        "{err}"
    );
    let out = tailor(&["index", "verify", s(&set)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is also in segment"));

    // An item in another segment than its id's (a segment from a set of another size).
    let set = dir.path().join("misplaced");
    build(
        &prepare_segment(&set, 0, 2).unwrap(),
        &d,
        &[zero[0], two[0]],
        "m",
    );
    let err = open_err(&set);
    assert!(
        err.contains(&format!(
            "item {:?} belongs in segment 1 of 2",
            d.ids[two[0]]
        )),
        "{err}"
    );

    // A damaged segment: a truncated vector file.
    let set = dir.path().join("damaged");
    for k in 0..3 {
        build(&prepare_segment(&set, k, 3).unwrap(), &d, &part(k), "m");
    }
    let seg = set.join(segment_name(2));
    let vec_file = std::fs::read_dir(&seg)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".vec"))
        .unwrap();
    let len = std::fs::metadata(&vec_file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vec_file)
        .unwrap()
        .set_len(len - 64)
        .unwrap();
    let err = open_err(&set);
    assert!(
        err.contains("segment-00002") && err.contains("cannot be opened"),
        "{err}"
    );
    let out = tailor(&["index", "verify", s(&set)]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILED segment     2"), "{text}");

    // A segment numbered outside the set (copied in from another set).
    let set = dir.path().join("stray");
    build(&prepare_segment(&set, 0, 2).unwrap(), &d, &part(0), "m");
    build(&set.join(segment_name(5)), &d, &part(1), "m");
    let err = open_err(&set);
    assert!(
        err.contains("segment-00005") && err.contains("outside the set's 2 segments"),
        "{err}"
    );

    // No segment yet; a set.json from a newer tailor; a set of another size.
    let set = dir.path().join("empty");
    prepare_segment(&set, 0, 2).unwrap();
    assert!(open_err(&set).contains("no segment of the set has landed yet (0 of 2)"));
    let err = prepare_segment(&set, 1, 3).unwrap_err().to_string();
    assert!(err.contains("the set has 2 segments; shard 1/3"), "{err}");
    std::fs::write(
        set.join("set.json"),
        r#"{"format":"tailor-segment-set","version":9,"segments":2}"#,
    )
    .unwrap();
    assert!(open_err(&set).contains("format version 9 is not supported"));
    std::fs::write(set.join("set.json"), "{").unwrap();
    assert!(open_err(&set).contains("not a segment-set manifest"));

    // A plain index is not a set to add segments to.
    let plain = dir.path().join("plain");
    build(&plain, &d, &part(0), "m");
    let err = prepare_segment(&plain, 0, 2).unwrap_err().to_string();
    assert!(
        err.contains("holds a single index, not a segment set"),
        "{err}"
    );
}

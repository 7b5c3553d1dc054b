//! `tailor eval map` / `tailor eval triplets` end to end: a synthetic catalog, vectors in
//! .npy files, the binary's JSON against a sort-based reference computed here.

use std::path::Path;
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tailor::catalog::{self, synth};

const DIM: usize = 6;

fn tailor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tailor"))
        .args(args)
        .output()
        .expect("run tailor");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Vectors that carry the label weakly (value direction + noise), coarse enough to tie.
fn write_vectors(dir: &Path, cat: &catalog::Catalog, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<String> = cat.items.iter().map(|i| i.id.clone()).collect();
    std::fs::write(dir.join("ids.txt"), ids.join("\n") + "\n").unwrap();
    let mut mats = Vec::new();
    for (a, attr) in cat.schema.attributes.iter().enumerate() {
        let mut m = Vec::with_capacity(ids.len() * DIM);
        for item in 0..ids.len() {
            let value = cat.labels.get(item, a);
            for d in 0..DIM {
                let signal = if value.map(|v| v as usize % DIM) == Some(d) {
                    2.0
                } else {
                    0.0
                };
                m.push(signal + rng.gen_range(-3i32..=3) as f32 / 2.0);
            }
        }
        tailor::npy::write_f32_matrix(&dir.join(format!("{}.npy", attr.name)), ids.len(), DIM, &m)
            .unwrap();
        mats.push(m);
    }
    mats
}

fn dot(m: &[f32], a: usize, b: usize) -> f32 {
    (0..DIM).map(|d| m[a * DIM + d] * m[b * DIM + d]).sum()
}

/// Sort-based AP with ties in candidate order.
fn reference_ap(scores: &[f32], relevant: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap());
    let (mut hits, mut sum) = (0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if relevant[i] {
            hits += 1;
            sum += hits as f64 / (k + 1) as f64;
        }
    }
    if hits == 0 {
        0.0
    } else {
        sum / hits as f64
    }
}

#[test]
fn map_on_a_catalog_split_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cat");
    let opts = synth::SynthOptions {
        items: 200,
        size: 32,
        seed: 1,
        jpeg: false,
    };
    synth::generate(&root, &opts, tailor::progress::ProgressMode::Quiet).unwrap();
    let asen = root.join("SynthFashion");
    let cat = catalog::open(&asen).unwrap();
    let mats = write_vectors(dir.path(), &cat, 9);

    let mut args = vec![
        "--json".to_string(),
        "-q".into(),
        "eval".into(),
        "map".into(),
    ];
    for attr in &cat.schema.attributes {
        args.push("--vectors".into());
        args.push(format!(
            "{}={}",
            attr.name,
            dir.path().join(format!("{}.npy", attr.name)).display()
        ));
    }
    args.extend([
        "--ids".into(),
        dir.path().join("ids.txt").display().to_string(),
        "--catalog".into(),
        asen.display().to_string(),
        "--split".into(),
        "test".into(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = tailor(&argv);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();

    let (queries, candidates) = cat.eval_split("test").unwrap();
    let mut all = Vec::new();
    for (a, attr) in cat.schema.attributes.iter().enumerate() {
        let cands: Vec<_> = candidates.iter().filter(|r| r.attribute == a).collect();
        let aps: Vec<f64> = queries
            .iter()
            .filter(|r| r.attribute == a)
            .map(|q| {
                let scores: Vec<f32> = cands
                    .iter()
                    .map(|c| dot(&mats[a], q.item, c.item))
                    .collect();
                let rel: Vec<bool> = cands.iter().map(|c| c.value == q.value).collect();
                reference_ap(&scores, &rel)
            })
            .collect();
        if aps.is_empty() {
            continue;
        }
        let got = json["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == attr.name.as_str())
            .unwrap_or_else(|| panic!("no attribute {} in {stdout}", attr.name));
        let want = aps.iter().sum::<f64>() / aps.len() as f64;
        assert!(
            (got["map"].as_f64().unwrap() - want).abs() < 1e-9,
            "{}",
            attr.name
        );
        all.extend(aps);
    }
    let want = all.iter().sum::<f64>() / all.len() as f64;
    assert!((json["map"].as_f64().unwrap() - want).abs() < 1e-9);
    assert!(json["random_map"].as_f64().unwrap() > 0.0);

    // The same sets through list files give the same numbers; text output is a table.
    let line = |r: &catalog::LabelledRef| {
        format!(
            "{} {} {}\n",
            cat.items[r.item].id, cat.schema.attributes[r.attribute].name, r.value
        )
    };
    std::fs::write(
        dir.path().join("q.txt"),
        queries.iter().map(line).collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c.txt"),
        candidates.iter().map(line).collect::<String>(),
    )
    .unwrap();
    let mut list_args: Vec<String> = args[..args.len() - 4].to_vec();
    list_args.extend([
        "--queries".into(),
        dir.path().join("q.txt").display().to_string(),
        "--candidates".into(),
        dir.path().join("c.txt").display().to_string(),
    ]);
    let argv: Vec<&str> = list_args.iter().map(String::as_str).collect();
    let (code, stdout2, stderr) = tailor(&argv);
    assert_eq!(code, 0, "{stderr}");
    let json2: serde_json::Value = serde_json::from_str(&stdout2).unwrap();
    assert!((json2["map"].as_f64().unwrap() - want).abs() < 1e-9);

    let argv: Vec<&str> = list_args[1..]
        .iter()
        .map(String::as_str)
        .chain(["--values"])
        .collect();
    let (code, text, stderr) = tailor(&argv);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.lines().next().unwrap().contains("neckline"), "{text}");
    assert!(text.contains(&format!("{:.2}", 100.0 * want)), "{text}");
    assert!(text.contains("top-1 confused with"), "{text}");
}

#[test]
fn bad_inputs_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("ids.txt"), "a\nb\nc\n").unwrap();
    tailor::npy::write_f32_matrix(&p.join("x.npy"), 3, 2, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap();
    tailor::npy::write_f32_matrix(&p.join("short.npy"), 2, 2, &[1.0, 0.0, 0.0, 1.0]).unwrap();
    std::fs::write(p.join("q.txt"), "a x 1\n").unwrap();
    std::fs::write(p.join("c.txt"), "b x 1\nzz x 2\n").unwrap();
    let s = |x: &str| p.join(x).display().to_string();
    let vec_x = format!("x={}", s("x.npy"));
    let (code, _, err) = tailor(&[
        "eval",
        "map",
        "--vectors",
        &vec_x,
        "--ids",
        &s("ids.txt"),
        "--queries",
        &s("q.txt"),
        "--candidates",
        &s("c.txt"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("c.txt:2") && err.contains("\"zz\""), "{err}");

    let vec_short = format!("x={}", s("short.npy"));
    let (code, _, err) = tailor(&[
        "eval",
        "map",
        "--vectors",
        &vec_short,
        "--ids",
        &s("ids.txt"),
        "--queries",
        &s("q.txt"),
        "--candidates",
        &s("c.txt"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("short.npy") && err.contains("2 rows"), "{err}");

    std::fs::write(p.join("c.txt"), "b x 1\nc y\n").unwrap();
    let (code, _, err) = tailor(&[
        "eval",
        "map",
        "--vectors",
        &vec_x,
        "--ids",
        &s("ids.txt"),
        "--queries",
        &s("q.txt"),
        "--candidates",
        &s("c.txt"),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("c.txt:2") && err.contains("item_id attribute value"),
        "{err}"
    );

    // Vectors missing for an attribute that has queries.
    std::fs::write(p.join("q.txt"), "a y 1\n").unwrap();
    std::fs::write(p.join("c.txt"), "b y 1\n").unwrap();
    let (code, _, err) = tailor(&[
        "eval",
        "map",
        "--vectors",
        &vec_x,
        "--ids",
        &s("ids.txt"),
        "--queries",
        &s("q.txt"),
        "--candidates",
        &s("c.txt"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown attribute \"y\""), "{err}");
}

#[test]
fn triplets_from_a_catalog_and_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cat");
    let opts = synth::SynthOptions {
        items: 120,
        size: 32,
        seed: 2,
        jpeg: false,
    };
    synth::generate(&root, &opts, tailor::progress::ProgressMode::Quiet).unwrap();
    let zap = root.join("zappos");
    let cat = catalog::open(&zap).unwrap();
    let mats = write_vectors(dir.path(), &cat, 4);
    let mut args = vec!["--json".to_string(), "eval".into(), "triplets".into()];
    for attr in &cat.schema.attributes {
        args.push("--vectors".into());
        args.push(format!(
            "{}={}",
            attr.name,
            dir.path().join(format!("{}.npy", attr.name)).display()
        ));
    }
    args.extend([
        "--ids".into(),
        dir.path().join("ids.txt").display().to_string(),
    ]);
    let mut cat_args = args.clone();
    cat_args.extend(["--catalog".into(), zap.display().to_string()]);
    let argv: Vec<&str> = cat_args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = tailor(&argv);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();

    let (mut correct, mut total) = (0usize, 0usize);
    let mut lines = String::new();
    for list in cat.triplets.iter().filter(|t| t.split == "test") {
        let m = &mats[list.attribute];
        let name = &cat.schema.attributes[list.attribute].name;
        let mut c = 0;
        for &[a, b, cc] in &list.triplets {
            c += usize::from(dot(m, a, cc) > dot(m, a, b));
            lines.push_str(&format!(
                "{} {} {} {name}\n",
                cat.items[a].id, cat.items[b].id, cat.items[cc].id
            ));
        }
        let got = json["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name.as_str())
            .unwrap();
        assert_eq!(got["correct"].as_u64().unwrap() as usize, c, "{name}");
        correct += c;
        total += list.triplets.len();
    }
    assert!(total > 0);
    assert!((json["accuracy"].as_f64().unwrap() - correct as f64 / total as f64).abs() < 1e-12);

    std::fs::write(dir.path().join("t.txt"), lines).unwrap();
    let mut file_args = args.clone();
    file_args.extend([
        "--triplets".into(),
        dir.path().join("t.txt").display().to_string(),
    ]);
    let argv: Vec<&str> = file_args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = tailor(&argv);
    assert_eq!(code, 0, "{stderr}");
    let json2: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json2["accuracy"], json["accuracy"]);
}

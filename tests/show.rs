//! `tailor show search|attention|space` and `tailor report` end to end on a tiny synthetic
//! catalog embedded by a tiny untrained model: picture sizes, non-uniform pixels, frames
//! against the catalog's ground truth, every file the report references, bad input.
//!
//! The headless-browser check of the report is `report_renders_in_headless_chromium`
//! (ignored; needs Debian's chromium, see tools/setup-chromium.sh and the README).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use tailor::catalog;

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

fn run_ok(args: &[&str]) -> String {
    let (code, out, err) = tailor(args);
    assert_eq!(code, 0, "tailor {args:?} failed:\n{out}\n{err}");
    out
}

fn json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = run_ok(&a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn p(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
}

/// 150 synthetic items, a tiny ASEN and a tiny AG-MAN, the catalog embedded by the ASEN.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let f = Fixture { _dir: dir, root };
        run_ok(&[
            "synth",
            "--out",
            &f.p("cat"),
            "--items",
            "150",
            "--size",
            "64",
            "--seed",
            "3",
            "-q",
        ]);
        for (arch, name) in [
            ("asen", "asen.safetensors"),
            ("ag-man", "agman.safetensors"),
        ] {
            run_ok(&[
                "model",
                "init",
                "--arch",
                arch,
                "--backbone",
                "tiny",
                "--catalog",
                &f.p("cat"),
                "--out",
                &f.p(name),
                "-q",
            ]);
        }
        run_ok(&[
            "embed",
            "--model",
            &f.p("asen.safetensors"),
            "--catalog",
            &f.p("cat"),
            "--out",
            &f.p("index"),
            "-q",
        ]);
        f
    })
}

fn load(path: &str) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .to_rgb8()
}

fn distinct_colours(img: &image::RgbImage) -> usize {
    let mut seen = std::collections::HashSet::new();
    for p in img.pixels() {
        seen.insert(p.0);
        if seen.len() > 64 {
            break;
        }
    }
    seen.len()
}

const GREEN: [u8; 3] = [0, 158, 60];
const RED: [u8; 3] = [215, 25, 28];

#[test]
fn search_sheet_has_the_requested_size_and_frames_follow_ground_truth() {
    let f = fixture();
    let cat = catalog::open(Path::new(&f.p("cat"))).unwrap();
    let a = cat.schema.attribute_index("neckline").unwrap();
    let query = &cat.items[5].id;
    let out = f.p("sheet.png");
    let v = json(&[
        "show",
        "search",
        "--index",
        &f.p("index"),
        "--item",
        query,
        "--attr",
        "neckline",
        "-k",
        "7",
        "--size",
        "1000x560",
        "--out",
        &out,
    ]);
    let img = load(&out);
    assert_eq!(img.dimensions(), (1000, 560));
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(1000), Some(560))
    );
    assert!(distinct_colours(&img) > 16, "picture looks flat");
    assert_eq!(v["judged"], true);
    let qv = cat.labels.get(5, a).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 7);
    let frame = v["frame_px"].as_u64().unwrap() as u32;
    assert!(frame >= 1);
    let (mut greens, mut reds) = (0, 0);
    for r in results {
        let item = cat.item_index(r["id"].as_str().unwrap()).unwrap();
        let truth = cat.labels.get(item, a).unwrap() == qv;
        assert_eq!(r["same_value"].as_bool(), Some(truth), "{r}");
        assert_eq!(
            r["value"].as_str(),
            Some(
                cat.schema.attributes[a].values[cat.labels.get(item, a).unwrap() as usize].as_str()
            )
        );
        // The frame is drawn just outside the picture box: left edge, half-way down.
        let t: Vec<u32> = r["tile"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let px = img.get_pixel(t[0] - 1 - frame / 2, t[1] + t[3] / 2).0;
        let expected = if truth { GREEN } else { RED };
        assert_eq!(px, expected, "frame of {} at {t:?}", r["id"]);
        if truth {
            greens += 1
        } else {
            reds += 1
        }
    }
    assert_eq!(greens + reds, 7);
}

#[test]
fn explain_overlays_attention_and_changes_the_pictures() {
    let f = fixture();
    let (plain, explained) = (f.p("plain.png"), f.p("explained.png"));
    let base = [
        "show",
        "search",
        "--index",
        &f.p("index"),
        "--item",
        "sf-000010",
        "--attr",
        "collar",
        "-k",
        "4",
        "--exact",
    ];
    let mut a = base.to_vec();
    a.extend(["--out", plain.as_str()]);
    run_ok(&a);
    let mut b = base.to_vec();
    b.extend(["--out", explained.as_str(), "--explain", "--json"]);
    let v: Value = serde_json::from_str(&run_ok(&b)).unwrap();
    assert_eq!(v["explained"], true);
    let (p, e) = (load(&plain), load(&explained));
    assert_eq!(p.dimensions(), e.dimensions());
    let t: Vec<u32> = v["query_tile"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let differ = (t[0]..t[0] + t[2])
        .flat_map(|x| (t[1]..t[1] + t[3]).map(move |y| (x, y)))
        .filter(|&(x, y)| p.get_pixel(x, y) != e.get_pixel(x, y))
        .count();
    assert!(
        differ > (t[2] * t[3] / 2) as usize,
        "overlay changed only {differ} pixels"
    );
}

#[test]
fn attention_panels_show_both_ag_man_levels_at_the_requested_size() {
    let f = fixture();
    let out = f.p("att.png");
    let image = f.root.join("cat/SynthFashion/images/000004.png");
    let v = json(&[
        "show",
        "attention",
        "--model",
        &f.p("agman.safetensors"),
        "--image",
        image.to_str().unwrap(),
        "--attr",
        "neckline,colour",
        "--size",
        "820x640",
        "--out",
        &out,
    ]);
    let img = load(&out);
    assert_eq!(img.dimensions(), (820, 640));
    assert!(distinct_colours(&img) > 16);
    let panels = v["panels"].as_array().unwrap();
    let levels: Vec<(&str, &str)> = panels
        .iter()
        .map(|p| {
            (
                p["attribute"].as_str().unwrap(),
                p["level"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        levels,
        [
            ("neckline", "attribute-guided"),
            ("neckline", "spatial gate"),
            ("colour", "attribute-guided"),
            ("colour", "spatial gate"),
        ]
    );
    // Every attribute by default (ASEN: one level each).
    let v = json(&[
        "show",
        "attention",
        "--model",
        &f.p("asen.safetensors"),
        "--image",
        image.to_str().unwrap(),
        "--out",
        &out,
    ]);
    assert_eq!(v["panels"].as_array().unwrap().len(), 7);
    let (code, _, err) = tailor(&[
        "show",
        "attention",
        "--model",
        &f.p("asen.safetensors"),
        "--image",
        image.to_str().unwrap(),
        "--attr",
        "hemline",
        "--out",
        &out,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("hemline"), "{err}");
}

#[test]
fn space_map_png_and_svg() {
    let f = fixture();
    let png = f.p("space.png");
    let v = json(&[
        "show",
        "space",
        "--index",
        &f.p("index"),
        "--attr",
        "colour",
        "--size",
        "700x500",
        "--max-points",
        "100",
        "--seed",
        "4",
        "--out",
        &png,
    ]);
    let img = load(&png);
    assert_eq!(img.dimensions(), (700, 500));
    assert!(distinct_colours(&img) > 8);
    assert_eq!(v["points"], 100);
    assert_eq!(v["items"], 150);
    assert_eq!(v["labelled"], true);
    let counted: u64 = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[1].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 100);
    // Same seed, same picture.
    let again = f.p("space-again.png");
    run_ok(&[
        "show",
        "space",
        "--index",
        &f.p("index"),
        "--attr",
        "colour",
        "--size",
        "700x500",
        "--max-points",
        "100",
        "--seed",
        "4",
        "--out",
        &again,
        "-q",
    ]);
    assert_eq!(load(&again), img);
    let svg = f.p("space.svg");
    run_ok(&[
        "show",
        "space",
        "--index",
        &f.p("index"),
        "--attr",
        "pattern",
        "--out",
        &svg,
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("width=\"900\"") && text.contains("<circle"));
    assert!(
        text.contains("vertical_stripes") || text.contains("solid"),
        "legend missing"
    );
    let (code, _, err) = tailor(&[
        "show",
        "space",
        "--index",
        &f.p("index"),
        "--attr",
        "colour",
        "--out",
        &f.p("x.gif"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains(".png or .svg"), "{err}");
}

#[test]
fn report_writes_a_page_whose_every_file_exists() {
    let f = fixture();
    let out = f.root.join("report");
    let v = json(&[
        "report",
        "--index",
        &f.p("index"),
        "--out",
        out.to_str().unwrap(),
        "--sheet-k",
        "5",
        "--max-points",
        "80",
    ]);
    let html_path = PathBuf::from(v["html"].as_str().unwrap());
    assert_eq!(html_path, out.join("index.html"));
    let html = std::fs::read_to_string(&html_path).unwrap();
    let srcs = tailor::show::report::image_sources(&html);
    // Chart, 7 sheets, 2 attention panels, 7 maps.
    assert_eq!(srcs.len(), 17, "{srcs:?}");
    for s in &srcs {
        assert!(
            !s.contains('/') && !s.contains(':'),
            "{s} is not beside the page"
        );
        let p = out.join(s);
        let img = load(p.to_str().unwrap());
        assert!(distinct_colours(&img) > 4, "{s} looks blank");
    }
    let files: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(files.len(), srcs.len());
    for needle in [
        "MAP",
        "random",
        "HNSW MAP",
        "nDCG@10",
        "Per value",
        "recall@",
        "UTC",
    ] {
        assert!(html.contains(needle), "page lacks {needle}");
    }
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"));
    assert!(v["map"].as_f64().unwrap() >= 0.0);
    assert!(v["random_map"].as_f64().unwrap() > 0.0);
}

#[test]
fn report_shows_triplet_accuracy_when_the_catalog_has_triplets() {
    let f = fixture();
    let zappos = f.root.join("cat/zappos");
    let index = f.p("index-zappos");
    run_ok(&[
        "embed",
        "--model",
        &f.p("asen.safetensors"),
        "--catalog",
        zappos.to_str().unwrap(),
        "--out",
        &index,
        "-q",
    ]);
    let out = f.root.join("report-zappos");
    let v = json(&[
        "report",
        "--index",
        &index,
        "--out",
        out.to_str().unwrap(),
        "--attention-images",
        "0",
    ]);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    if v.get("triplet_accuracy").is_some() {
        assert!(html.contains("Triplet accuracy"));
    } else {
        panic!("the Zappos-style catalog has test triplets: {v}");
    }
}

#[test]
fn unlabelled_index_gives_an_unframed_sheet_that_says_so() {
    let f = fixture();
    let d = f.root.join("unl");
    std::fs::create_dir_all(&d).unwrap();
    let (npy, ids) = (d.join("neck.npy"), d.join("ids.txt"));
    run_ok(&[
        "index",
        "export",
        &f.p("index"),
        "--attr",
        "neckline",
        "--out",
        npy.to_str().unwrap(),
        "--ids-out",
        ids.to_str().unwrap(),
    ]);
    let spec = format!("neckline={}", npy.display());
    run_ok(&[
        "index",
        "build",
        "--vectors",
        &spec,
        "--ids",
        ids.to_str().unwrap(),
        "--out",
        d.join("ix").to_str().unwrap(),
        "-q",
    ]);
    // A catalog with images and no labels.
    let cat = catalog::open(Path::new(&f.p("cat"))).unwrap();
    let mut csv = String::from("id,image\n");
    for i in 0..cat.items.len() {
        csv += &format!("{},{}\n", cat.items[i].id, cat.image_path(i).display());
    }
    std::fs::write(d.join("plain.csv"), csv).unwrap();
    let out = d.join("sheet.png");
    let v = json(&[
        "show",
        "search",
        "--index",
        d.join("ix").to_str().unwrap(),
        "--catalog",
        d.join("plain.csv").to_str().unwrap(),
        "--item",
        "sf-000003",
        "--attr",
        "neckline",
        "-k",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(v["judged"], false);
    let notes = v["notes"].to_string();
    assert!(notes.contains("no labels"), "{notes}");
    let img = load(out.to_str().unwrap());
    assert!(distinct_colours(&img) > 16);
    assert!(
        !img.pixels().any(|p| p.0 == GREEN),
        "an unlabelled sheet has no green frames"
    );
    // Without a catalog recorded or given, it asks for one.
    let (code, _, err) = tailor(&[
        "show",
        "search",
        "--index",
        d.join("ix").to_str().unwrap(),
        "--item",
        "sf-000003",
        "--attr",
        "neckline",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--catalog"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let f = fixture();
    let out = f.p("bad.png");
    let ix = f.p("index");
    let search = |extra: &[&str]| {
        let mut a = vec![
            "show",
            "search",
            "--index",
            ix.as_str(),
            "--out",
            out.as_str(),
        ];
        a.extend_from_slice(extra);
        tailor(&a)
    };
    let (code, _, err) = search(&["--item", "sf-000001", "--attr", "hemline"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown attribute \"hemline\""), "{err}");
    let garbage = f.root.join("garbage.png");
    std::fs::write(&garbage, b"not an image at all").unwrap();
    let (code, _, err) = search(&["--image", garbage.to_str().unwrap(), "--attr", "neckline"]);
    assert_eq!(code, 2);
    assert!(err.contains("garbage.png"), "{err}");
    let (code, _, err) = search(&[
        "--item",
        "sf-000001",
        "--attr",
        "neckline",
        "--explain",
        "--model",
        &f.p("agman.safetensors"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("identity"), "{err}");
    let (code, _, err) = search(&["--item", "no-such-item", "--attr", "neckline"]);
    assert_eq!(code, 2);
    assert!(err.contains("no-such-item"), "{err}");
    let (code, _, err) = search(&[
        "--item",
        "sf-000001",
        "--attr",
        "neckline",
        "--size",
        "80x80",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("too small"), "{err}");

    // An index whose every item is removed.
    let empty = f.root.join("empty");
    run_ok(&[
        "index",
        "export",
        &ix,
        "--attr",
        "colour",
        "--out",
        f.root.join("c.npy").to_str().unwrap(),
        "--ids-out",
        f.root.join("c.txt").to_str().unwrap(),
    ]);
    let spec = format!("colour={}", f.root.join("c.npy").display());
    run_ok(&[
        "index",
        "build",
        "--vectors",
        &spec,
        "--ids",
        f.root.join("c.txt").to_str().unwrap(),
        "--out",
        empty.to_str().unwrap(),
        "-q",
    ]);
    run_ok(&[
        "index",
        "remove",
        empty.to_str().unwrap(),
        "--ids",
        f.root.join("c.txt").to_str().unwrap(),
    ]);
    let (code, _, err) = tailor(&[
        "show",
        "space",
        "--index",
        empty.to_str().unwrap(),
        "--attr",
        "colour",
        "--out",
        &out,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("empty"), "{err}");
    let (code, _, err) = tailor(&[
        "report",
        "--index",
        empty.to_str().unwrap(),
        "--catalog",
        &f.p("cat"),
        "--out",
        f.root.join("r-empty").to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("empty"), "{err}");
}

/// Opens the report in headless Chromium (Debian's `chromium`; `bash
/// tools/setup-chromium.sh` installs it), screenshots it and checks the page is not blank.
/// Run: `cargo test --test show -- --ignored report_renders_in_headless_chromium`.
#[test]
#[ignore]
fn report_renders_in_headless_chromium() {
    let f = fixture();
    let out = f.root.join("report-browser");
    run_ok(&[
        "report",
        "--index",
        &f.p("index"),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    let shot = f.root.join("screenshot.png");
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", out.join("index.html").display());
    let status = Command::new(std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into()))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            "--window-size=1280,2000",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .expect("run chromium (install it with: bash tools/setup-chromium.sh)");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let img = load(shot.to_str().unwrap());
    assert_eq!(img.dimensions(), (1280, 2000));
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let share = non_white as f64 / (1280.0 * 2000.0);
    assert!(
        share > 0.05,
        "screenshot is nearly blank ({:.1}% non-white)",
        100.0 * share
    );
    assert!(distinct_colours(&img) > 32);
}

//! Catalog readers refuse what would slip through and fail later (control characters in
//! ids, conflicting labels, repeated schema values) and accept what exports really look
//! like (a UTF-8 BOM); `catalog check` judges images the way `embed` will (issue 13).

use std::path::Path;

use tailor::catalog;

fn error_of(path: &Path) -> String {
    catalog::open(path)
        .expect_err("catalog must be refused")
        .to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn ids_with_control_characters_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    // A newline inside a quoted CSV cell is a legal CSV: the id must still be refused.
    let csv = write(
        dir.path(),
        "m.csv",
        "id,image,colour\nok,a.png,red\n\"sku-with\nnewline\",b.png,red\n",
    );
    let err = error_of(&csv);
    assert!(
        err.contains("m.csv:3:")
            && err.contains("\"sku-with\\nnewline\"")
            && err.contains("control character U+000A"),
        "{err}"
    );
    let jsonl = write(
        dir.path(),
        "m.jsonl",
        "{\"id\": \"a\", \"image\": \"a.png\"}\n{\"id\": \"tab\\there\", \"image\": \"b.png\"}\n",
    );
    let err = error_of(&jsonl);
    assert!(
        err.contains("m.jsonl:2:") && err.contains("U+0009"),
        "{err}"
    );
}

#[test]
fn jsonl_with_a_byte_order_mark_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "m.jsonl",
        "\u{feff}{\"id\": \"a\", \"image\": \"a.png\", \"colour\": \"red\"}\n{\"id\": \"b\", \"image\": \"b.png\", \"colour\": \"blue\"}\n",
    );
    let cat = catalog::open(&p).unwrap();
    assert_eq!(cat.items[0].id, "a");
    assert_eq!(cat.schema.names(), ["colour"]);
}

#[test]
fn conflicting_flat_and_nested_labels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "m.jsonl",
        "{\"id\": \"a\", \"image\": \"a.png\", \"labels\": {\"colour\": \"red\"}}\n\
         {\"id\": \"b\", \"image\": \"b.png\", \"colour\": \"red\", \"labels\": {\"colour\": \"blue\"}}\n",
    );
    let err = error_of(&p);
    assert!(
        err.contains("m.jsonl:2:")
            && err.contains("item \"b\"")
            && err.contains(
                "label \"colour\" is \"red\" at the top level but \"blue\" under \"labels\""
            ),
        "{err}"
    );
    // The same value given both ways is one label, not a conflict.
    let same = write(
        dir.path(),
        "same.jsonl",
        "{\"id\": \"a\", \"image\": \"a.png\", \"colour\": \"red\", \"labels\": {\"colour\": \"red\"}}\n",
    );
    let cat = catalog::open(&same).unwrap();
    assert_eq!(cat.labels.get(0, 0), Some(0));
}

#[test]
fn repeated_schema_values_and_attributes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m.csv", "id,image,colour\na,a.png,red\n");
    write(
        dir.path(),
        "schema.json",
        "{\"attributes\": [\n  {\"name\": \"size\", \"values\": [\"red\"]},\n  {\"name\": \"colour\",\n   \"values\": [\"red\",\n              \"blue\",\n              \"red\"]}\n]}\n",
    );
    let err = error_of(&m);
    assert!(
        err.contains("schema.json:6:")
            && err.contains("attribute \"colour\": value \"red\" is listed twice (values 1 and 3)"),
        "{err}"
    );
    write(
        dir.path(),
        "schema.json",
        "{\"attributes\": [\n {\"name\": \"colour\", \"values\": [\"red\"]},\n {\"name\": \"colour\", \"values\": [\"blue\"]}\n]}\n",
    );
    let err = error_of(&m);
    assert!(
        err.contains("schema.json:3:")
            && err.contains("attribute \"colour\" is listed twice (attributes 1 and 2)"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn catalog_check_reports_images_as_embed_will_treat_them() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images");
    let fifo = dir.path().join("fifo.jpg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let mut csv = String::from("id,image\n");
    for (id, path) in [
        ("webp", fixtures.join("webp-lossy.webp")),
        ("gif", fixtures.join("gif-animated.gif")),
        ("cmyk-tiff", fixtures.join("tiff-cmyk.tif")),
        ("cut-jpeg", fixtures.join("truncated.jpg")),
        ("fifo", fifo.clone()),
        ("zero", "/dev/zero".into()),
        ("gone", dir.path().join("gone.png")),
    ] {
        csv += &format!("{id},{}\n", path.display());
    }
    let m = write(dir.path(), "m.csv", &csv);
    let cat = catalog::open(&m).unwrap();
    let report = catalog::check::check(&cat);
    let reasons: Vec<(&str, &str)> = report
        .unreadable_images
        .iter()
        .map(|p| (p.item.as_str(), p.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "cut-jpeg",
                "truncated JPEG file: the file ends inside the image data (no end-of-image marker)"
            ),
            (
                "fifo",
                "not a regular file (a FIFO); images must be plain files"
            ),
            (
                "zero",
                "not a regular file (a character device); images must be plain files"
            ),
        ]
    );
    assert_eq!(report.missing_images.len(), 1);
    assert_eq!(report.missing_images[0].reason, "file not found");
}

/// Training decodes with the same loader as embedding: a truncated JPEG is refused with
/// the loader's reason (it was grey-filled and trained on), and a WebP trains.
#[test]
fn training_uses_the_shared_loader() {
    use tailor::model::{Arch, BackboneConfig, ModelConfig};
    use tailor::train::data::ImageStore;
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images");
    let m = write(
        dir.path(),
        "m.csv",
        &format!(
            "id,image,colour\nwebp,{},red\ncut,{},blue\n",
            fixtures.join("webp-lossy.webp").display(),
            fixtures.join("truncated.jpg").display()
        ),
    );
    let cat = catalog::open(&m).unwrap();
    let cfg = ModelConfig::new(
        Arch::Asen,
        BackboneConfig::tiny(),
        vec!["colour".into()],
        vec![vec!["blue".into(), "red".into()]],
    );
    let quiet = tailor::progress::ProgressMode::Quiet;
    let store = ImageStore::load(&cat, &[0], &cfg, quiet).unwrap();
    assert!(store.contains(0));
    let err = ImageStore::load(&cat, &[0, 1], &cfg, quiet)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("truncated.jpg") && err.contains("truncated JPEG file"),
        "{err}"
    );
}

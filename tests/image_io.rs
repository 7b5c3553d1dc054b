//! The shared image loader (src/image_io.rs): formats decoded like Pillow, and every kind
//! of unusable file refused with its reason, without hanging or reading it whole.
//! Fixtures: tools/make_image_fixtures.py (Pillow).

use std::path::{Path, PathBuf};

use tailor::image_io::{decode_rgb_with, read_bounded, ImageError, ImageLimits};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/images")
        .join(name)
}

fn decode(path: &Path) -> Result<image::DynamicImage, ImageError> {
    decode_rgb_with(path, &ImageLimits::default())
}

/// Mean and largest absolute difference per channel against Pillow's `convert('RGB')`.
fn diff_to_pil(name: &str) -> (f64, u8) {
    let ours = decode(&fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_rgb8();
    let stem = name.rsplit_once('.').unwrap().0;
    let pil = image::open(fixture(&format!("expected/{stem}.png")))
        .unwrap()
        .to_rgb8();
    assert_eq!(ours.dimensions(), pil.dimensions(), "{name}");
    let diffs: Vec<u8> = ours
        .as_raw()
        .iter()
        .zip(pil.as_raw())
        .map(|(&a, &b)| a.abs_diff(b))
        .collect();
    let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
    (mean, *diffs.iter().max().unwrap())
}

#[test]
fn webp_gif_bmp_tiff_decode_like_pillow() {
    // (file, mean tolerance, max tolerance). Lossless formats match exactly; CMYK is
    // within rounding (Pillow rounds, the TIFF decoder truncates); lossy WebP differs
    // only in the decoder's chroma upsampling.
    for (name, mean_tol, max_tol) in [
        ("webp-lossless.webp", 0.0, 0),
        ("webp-alpha.webp", 0.0, 0),
        ("webp-animated.webp", 0.0, 0),
        ("webp-lossy.webp", 3.0, 40),
        ("gif-animated.gif", 0.0, 0),
        ("bmp-rgb.bmp", 0.0, 0),
        ("tiff-rgb.tif", 0.0, 0),
        ("tiff-cmyk.tif", 1.0, 1),
    ] {
        let (mean, max) = diff_to_pil(name);
        assert!(
            mean <= mean_tol && max <= max_tol,
            "{name}: mean |diff| {mean}, max {max} (allowed {mean_tol}, {max_tol})"
        );
    }
}

#[test]
fn truncated_jpeg_is_rejected_not_grey_filled() {
    let err = decode(&fixture("truncated.jpg")).unwrap_err();
    assert!(
        matches!(err, ImageError::Truncated { format: "JPEG", .. }),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("truncated JPEG file"), "{err}");
}

#[test]
fn truncated_png_is_rejected() {
    let err = decode(&fixture("truncated.png")).unwrap_err();
    assert_eq!(
        err,
        ImageError::Truncated {
            format: "PNG",
            detail: "the data ends early".into()
        }
    );
}

#[test]
fn missing_empty_and_foreign_files() {
    assert_eq!(
        decode(&fixture("no-such-file.png")).unwrap_err(),
        ImageError::NotFound
    );
    assert_eq!(
        decode(&fixture("empty.jpg")).unwrap_err(),
        ImageError::Empty
    );
    assert_eq!(
        decode(&fixture("not-an-image.png")).unwrap_err(),
        ImageError::NotAnImage
    );
    let dir = fixture("");
    assert_eq!(
        decode(&dir).unwrap_err(),
        ImageError::NotRegularFile("a directory")
    );
}

#[cfg(unix)]
#[test]
fn fifo_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("photo.jpg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    // Run in a thread so a regression shows as a failure, not a hung test run.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || tx.send(decode(&path)).unwrap());
    let res = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("decoding a FIFO hung");
    assert_eq!(res.unwrap_err(), ImageError::NotRegularFile("a FIFO"));
}

#[cfg(unix)]
#[test]
fn dev_zero_is_refused_unread() {
    assert_eq!(
        decode(Path::new("/dev/zero")).unwrap_err(),
        ImageError::NotRegularFile("a character device")
    );
}

#[test]
fn a_file_over_the_byte_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // A real PNG header, then a sparse hole: 3 GB on paper, no disk used.
    let big = dir.path().join("huge.png");
    let png = std::fs::read(fixture("grey.png")).unwrap();
    let f = std::fs::File::create(&big).unwrap();
    std::io::Write::write_all(&mut &f, &png).unwrap();
    f.set_len(3 << 30).unwrap();
    drop(f);
    let err = read_bounded(&big, &ImageLimits::default()).unwrap_err();
    assert_eq!(
        err,
        ImageError::TooLarge {
            size: 3 << 30,
            limit: tailor::image_io::DEFAULT_MAX_BYTES
        }
    );
    assert!(err.to_string().contains("maximum image size"), "{err}");
    // A 3 GB file that is not an image is refused from its header.
    let junk = dir.path().join("junk.png");
    std::fs::File::create(&junk)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    assert_eq!(
        read_bounded(&junk, &ImageLimits::default()).unwrap_err(),
        ImageError::NotAnImage
    );
    // A small limit applies to a small file too.
    let tight = ImageLimits {
        max_bytes: 50,
        ..ImageLimits::default()
    };
    assert!(matches!(
        decode_rgb_with(&fixture("palette.png"), &tight).unwrap_err(),
        ImageError::TooLarge { limit: 50, .. }
    ));
}

#[test]
fn side_limit_is_kept() {
    let tight = ImageLimits {
        max_side: 16,
        ..ImageLimits::default()
    };
    let err = decode_rgb_with(&fixture("bmp-rgb.bmp"), &tight).unwrap_err();
    assert!(err.to_string().contains("16 pixels per side"), "{err}");
}

//! Image decoding for every image path: every failure becomes a reason string (the batch
//! job writes it to its rejects report), never a panic. The loader is [`crate::image_io`],
//! shared with `catalog check`.

use std::path::Path;

use image::DynamicImage;

pub use crate::image_io::MAX_SIDE;

/// Decodes an image file to RGB through [`crate::image_io::decode_rgb`] (the process's
/// configured limits); the error is the reason written to the rejects report.
pub fn decode_rgb(path: &Path) -> Result<DynamicImage, String> {
    crate::image_io::decode_rgb(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/images")
            .join(name)
    }

    /// Mean absolute difference per channel against PIL's `exif_transpose` +
    /// `convert('RGB')` of the same file (fixtures/images/expected, made with Pillow).
    fn mean_abs_diff_to_pil(name: &str) -> f64 {
        let ours = decode_rgb(&fixture(name)).unwrap().to_rgb8();
        let stem = name.rsplit_once('.').unwrap().0;
        let pil = image::open(fixture(&format!("expected/{stem}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(ours.dimensions(), pil.dimensions(), "{name}");
        let total: u64 = ours
            .as_raw()
            .iter()
            .zip(pil.as_raw())
            .map(|(&a, &b)| (a as i32 - b as i32).unsigned_abs() as u64)
            .sum();
        total as f64 / ours.as_raw().len() as f64
    }

    #[test]
    fn odd_modes_decode_like_pillow() {
        for (name, tolerance) in [
            ("grey.png", 0.0),
            ("grey16.png", 0.5),
            ("rgba.png", 0.0),
            ("palette.png", 0.0),
            ("cmyk.jpg", 4.0),
            ("exif-rotate90.jpg", 4.0),
        ] {
            let d = mean_abs_diff_to_pil(name);
            assert!(d <= tolerance, "{name}: mean |diff| {d} > {tolerance}");
        }
    }

    #[test]
    fn exif_orientation_is_applied() {
        let img = decode_rgb(&fixture("exif-rotate90.jpg")).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (24, 40),
            "stored 40x24, orientation 6"
        );
    }

    #[test]
    fn unusable_files_give_reasons() {
        let reason = |n: &str| decode_rgb(&fixture(n)).unwrap_err();
        assert!(
            reason("empty.jpg").contains("empty file"),
            "{}",
            reason("empty.jpg")
        );
        assert!(
            reason("not-an-image.png").contains("not an image"),
            "{}",
            reason("not-an-image.png")
        );
        assert!(
            reason("truncated.png").contains("truncated PNG file"),
            "{}",
            reason("truncated.png")
        );
        assert!(reason("no-such-file.png").contains("file not found"));
    }
}

//! Image pre-processing matching torchvision's `Resize(s) + CenterCrop(s) + ToTensor() +
//! Normalize(mean, std)` on PIL images: the shorter side becomes `s` and the longer one
//! `int(s * long / short)` (truncated, as torchvision does), bilinear filtering with
//! PIL-style antialiasing (`image`'s Triangle filter), crop offsets `round((h - s) / 2)`
//! with Python's round-half-to-even. PIL filters in 8-bit fixed point and `image` in f32,
//! so pixels may differ by a unit or two of 1/255 (measured in the parity tests).

use image::{imageops, DynamicImage, RgbImage};

use crate::error::{Error, Result};

use super::config::ModelConfig;

/// Size after torchvision's `Resize(size)` for an int size: (width, height).
pub fn resized_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (size as u64 * long as u64 / short as u64) as u32;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Offset of a centred crop of `crop` out of `len`, as torchvision computes it.
pub fn crop_offset(len: u32, crop: u32) -> u32 {
    ((len as f64 - crop as f64) / 2.0).round_ties_even() as u32
}

/// Resized and centre-cropped RGB image, `size` x `size`.
pub fn resize_and_crop(img: &DynamicImage, size: u32) -> Result<RgbImage> {
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::Usage(format!(
            "cannot pre-process an empty {w}x{h} image"
        )));
    }
    let (rw, rh) = resized_size(w, h, size);
    let resized = if (rw, rh) == (w, h) {
        rgb
    } else {
        imageops::resize(&rgb, rw, rh, imageops::FilterType::Triangle)
    };
    let (x0, y0) = (crop_offset(rw, size), crop_offset(rh, size));
    Ok(imageops::crop_imm(&resized, x0, y0, size, size).to_image())
}

/// Decoded image -> normalised CHW floats (`3 * s * s`, s = the model's input size).
pub fn preprocess(img: &DynamicImage, cfg: &ModelConfig) -> Result<Vec<f32>> {
    let s = cfg.input_size;
    let rgb = resize_and_crop(img, s)?;
    let plane = (s * s) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p.0[c] as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_truncates_like_torchvision() {
        // int(224 * 500 / 333) = 336 (336.33...), int(224 * 640 / 427) = 335 (335.73...).
        assert_eq!(resized_size(333, 500, 224), (224, 336));
        assert_eq!(resized_size(640, 427, 224), (335, 224));
        assert_eq!(resized_size(224, 224, 224), (224, 224));
    }

    #[test]
    fn crop_rounds_half_to_even() {
        assert_eq!(crop_offset(225, 224), 0); // 0.5 -> 0
        assert_eq!(crop_offset(227, 224), 2); // 1.5 -> 2
        assert_eq!(crop_offset(229, 224), 2); // 2.5 -> 2
        assert_eq!(crop_offset(336, 224), 56);
    }

    #[test]
    fn preprocess_gives_chw_normalised() {
        let cfg = ModelConfig::new(
            super::super::Arch::Asen,
            super::super::BackboneConfig::tiny(),
            vec!["a".into()],
            vec![],
        );
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(100, 80, image::Rgb([255, 0, 128])));
        let v = preprocess(&img, &cfg).unwrap();
        let plane = (cfg.input_size * cfg.input_size) as usize;
        assert_eq!(v.len(), 3 * plane);
        assert!((v[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((v[plane] - (0.0 - 0.456) / 0.224).abs() < 1e-5);
    }
}

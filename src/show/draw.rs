//! Drawing primitives shared by every picture: an RGB canvas, text in the bundled DejaVu
//! Sans (rendered by `ab_glyph` through `plotters`, never a system font), the attention
//! colour map and overlay, a categorical palette and PNG output.

use std::path::Path;
use std::sync::Once;

use image::{Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::{register_font, FontDesc, FontFamily, FontStyle};

use crate::error::{Error, Result};

/// DejaVu Sans 2.37 from Debian's fonts-dejavu-core (licence in assets/fonts/).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family every picture uses; plotters' chart defaults ask for it too.
pub const FONT_FAMILY: &str = "sans-serif";

/// Registers the bundled font with plotters (once per process).
pub fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType file compiled in; a failure here would only
        // show as missing text, so it is not worth an error path.
        let _ = register_font(FONT_FAMILY, FontStyle::Normal, FONT);
    });
}

pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
pub const INK: Rgb<u8> = Rgb([25, 25, 25]);
pub const GREY: Rgb<u8> = Rgb([110, 110, 110]);
pub const LIGHT: Rgb<u8> = Rgb([225, 225, 225]);
/// Frame of a result with the query's value (a green readable by most colour-blind eyes
/// against the red: they differ in lightness too).
pub const MATCH: Rgb<u8> = Rgb([0, 158, 60]);
/// Frame of a result with another value.
pub const MISMATCH: Rgb<u8> = Rgb([215, 25, 28]);
/// Frame of the query.
pub const QUERY: Rgb<u8> = Rgb([33, 102, 172]);

/// Wraps a drawing error with the picture it was for.
pub(crate) fn draw_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Usage(format!("drawing {what} failed: {e}"))
}

fn font(size: u32) -> FontDesc<'static> {
    ensure_font();
    FontDesc::new(
        FontFamily::Name(FONT_FAMILY),
        size as f64,
        FontStyle::Normal,
    )
}

/// Width and height in pixels of `text` at `size` px.
pub fn text_size(text: &str, size: u32) -> (u32, u32) {
    font(size).box_size(text).unwrap_or((0, 0))
}

/// `text` shortened with an ellipsis so that it is at most `max_width` px wide.
pub fn fit(text: &str, size: u32, max_width: u32) -> String {
    if text_size(text, size).0 <= max_width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut n = chars.len();
    while n > 0 {
        n -= 1;
        let s: String = chars[..n].iter().collect::<String>() + "…";
        if text_size(&s, size).0 <= max_width {
            return s;
        }
    }
    String::new()
}

/// An RGB picture being composed.
pub struct Canvas {
    pub img: RgbImage,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas {
            img: RgbImage::from_pixel(width.max(1), height.max(1), WHITE),
        }
    }

    pub fn width(&self) -> u32 {
        self.img.width()
    }

    pub fn height(&self) -> u32 {
        self.img.height()
    }

    /// Fills a rectangle, clipped to the canvas.
    pub fn fill(&mut self, x: i64, y: i64, w: u32, h: u32, colour: Rgb<u8>) {
        let (cw, ch) = (self.img.width() as i64, self.img.height() as i64);
        for yy in y.max(0)..(y + h as i64).min(ch) {
            for xx in x.max(0)..(x + w as i64).min(cw) {
                self.img.put_pixel(xx as u32, yy as u32, colour);
            }
        }
    }

    /// A frame of `thickness` px drawn outside the box (x, y, w, h).
    pub fn frame(&mut self, x: i64, y: i64, w: u32, h: u32, thickness: u32, colour: Rgb<u8>) {
        let t = thickness as i64;
        let (ow, oh) = (w + 2 * thickness, h + 2 * thickness);
        self.fill(x - t, y - t, ow, thickness, colour);
        self.fill(x - t, y + h as i64, ow, thickness, colour);
        self.fill(x - t, y - t, thickness, oh, colour);
        self.fill(x + w as i64, y - t, thickness, oh, colour);
    }

    /// Copies `img` with its top-left corner at (x, y).
    pub fn paste(&mut self, img: &RgbImage, x: i64, y: i64) {
        image::imageops::replace(&mut self.img, img, x, y);
    }

    /// Draws one line of text with its top-left corner at (x, y).
    pub fn text(&mut self, text: &str, x: i32, y: i32, size: u32, colour: Rgb<u8>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let (w, h) = (self.img.width(), self.img.height());
        let root = BitMapBackend::with_buffer(&mut self.img, (w, h)).into_drawing_area();
        let rgb = RGBColor(colour[0], colour[1], colour[2]);
        let style = TextStyle::from(font(size)).color(&rgb);
        root.draw_text(text, &style, (x, y))
            .map_err(|e| draw_error("text", e))?;
        root.present().map_err(|e| draw_error("text", e))?;
        Ok(())
    }

    /// A horizontal colour bar from low to high attention with its labels, `w` x `h` px
    /// for the bar; text below it.
    pub fn heat_legend(&mut self, x: i64, y: i64, w: u32, h: u32, size: u32) -> Result<()> {
        for i in 0..w {
            let c = heat(i as f32 / (w.max(2) - 1) as f32);
            self.fill(x + i as i64, y, 1, h, c);
        }
        self.frame(x, y, w, h, 1, GREY);
        let ty = (y + h as i64 + 3) as i32;
        self.text("low", x as i32, ty, size, INK)?;
        let hi = "high";
        let hw = text_size(hi, size).0 as i64;
        self.text(hi, (x + w as i64 - hw) as i32, ty, size, INK)?;
        Ok(())
    }
}

/// The attention colour map (viridis: perceptually uniform, readable in grey).
pub fn heat(v: f32) -> Rgb<u8> {
    let c: RGBColor = ViridisRGB.get_color(v.clamp(0.0, 1.0));
    Rgb([c.0, c.1, c.2])
}

/// Distinct colours for the values of an attribute: Tableau's ten, then hues spaced by
/// the golden angle.
pub fn palette(i: usize) -> Rgb<u8> {
    const TAB10: [[u8; 3]; 10] = [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ];
    if i < TAB10.len() {
        return Rgb(TAB10[i]);
    }
    let hue = ((i - TAB10.len()) as f64 * 137.508) % 360.0;
    let c = HSLColor(hue / 360.0, 0.65, 0.45).to_rgba();
    Rgb([c.0, c.1, c.2])
}

/// The colour of a value: the colour it names when it names one (a "red" point drawn
/// blue misleads), otherwise the categorical palette's `i`-th.
pub fn value_colour(name: &str, i: usize) -> Rgb<u8> {
    named_colour(name).unwrap_or_else(|| palette(i))
}

/// Plain colour words as they appear in catalogs' colour attributes (case and
/// separators ignored). White is drawn light grey so it shows on the white chart.
fn named_colour(name: &str) -> Option<Rgb<u8>> {
    let key: String = name
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let rgb = match key.as_str() {
        "red" => [214, 39, 40],
        "orange" => [255, 127, 14],
        "yellow" => [230, 200, 20],
        "green" => [44, 160, 44],
        "blue" => [31, 119, 180],
        "navy" | "navyblue" => [20, 40, 110],
        "purple" | "violet" => [148, 103, 189],
        "pink" => [227, 119, 194],
        "brown" => [140, 86, 75],
        "beige" | "khaki" => [210, 190, 150],
        "black" => [20, 20, 20],
        "white" => [215, 215, 215],
        "grey" | "gray" => [127, 127, 127],
        _ => return None,
    };
    Some(Rgb(rgb))
}

/// A spatial attention map `h x w`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMap {
    pub h: usize,
    pub w: usize,
    pub values: Vec<f32>,
}

impl AttentionMap {
    /// Whether the map is flat (heads that average-pool): nothing to show.
    pub fn is_uniform(&self) -> bool {
        let (lo, hi) = self.range();
        hi - lo <= 1e-6 * hi.abs().max(1e-12)
    }

    fn range(&self) -> (f32, f32) {
        self.values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    }

    /// Bilinear value at continuous map coordinates (pixel centres at +0.5, as
    /// `align_corners=False` upsampling does), normalised to [0, 1] over the map.
    fn sample(&self, fy: f32, fx: f32, lo: f32, span: f32) -> f32 {
        let y = (fy - 0.5).clamp(0.0, (self.h - 1) as f32);
        let x = (fx - 0.5).clamp(0.0, (self.w - 1) as f32);
        let (y0, x0) = (y.floor() as usize, x.floor() as usize);
        let (y1, x1) = ((y0 + 1).min(self.h - 1), (x0 + 1).min(self.w - 1));
        let (ty, tx) = (y - y0 as f32, x - x0 as f32);
        let at = |r: usize, c: usize| self.values[r * self.w + c];
        let top = at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx;
        let bottom = at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx;
        ((top * (1.0 - ty) + bottom * ty) - lo) / span
    }
}

/// `img` with the attention map upsampled over it: each pixel blended with the colour of
/// its (min-max normalised) attention, more opaque where attention is high so the
/// attended region stands out. A flat map leaves the image as it is.
pub fn overlay(img: &RgbImage, att: &AttentionMap) -> RgbImage {
    if att.h == 0 || att.w == 0 || att.values.len() != att.h * att.w || att.is_uniform() {
        return img.clone();
    }
    let (lo, hi) = att.range();
    let span = hi - lo;
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        let fy = (y as f32 + 0.5) * att.h as f32 / h as f32;
        let fx = (x as f32 + 0.5) * att.w as f32 / w as f32;
        let v = att.sample(fy, fx, lo, span);
        let c = heat(v);
        let a = 0.3 + 0.45 * v;
        for k in 0..3 {
            p[k] = (p[k] as f32 * (1.0 - a) + c[k] as f32 * a).round() as u8;
        }
    }
    out
}

/// The square centre crop of `img` at `side` px: the region the model sees (torchvision's
/// Resize + CenterCrop), so an attention map lies over the right pixels.
pub fn square_crop(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let s = w.min(h).max(1);
    let cropped = image::imageops::crop_imm(img, (w - s) / 2, (h - s) / 2, s, s).to_image();
    image::imageops::resize(
        &cropped,
        side.max(1),
        side.max(1),
        image::imageops::FilterType::Triangle,
    )
}

/// Writes a PNG, naming the file in any error.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| match e {
            image::ImageError::IoError(io) => Error::io(path, io),
            other => Error::invalid(path, format!("cannot write PNG: {other}")),
        })
}

/// Parses a picture size `WxH` (each 64..=8192 px).
pub fn parse_size(text: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::Usage(format!(
            "size {text:?}: expected WIDTHxHEIGHT in pixels, e.g. 1200x800, each 64..8192"
        ))
    };
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if !(64..=8192).contains(&w) || !(64..=8192).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

/// Words of `text` in lines at most `max_width` px wide (a word too long for a line is
/// shortened), at most `max_lines` lines (the last one ends in an ellipsis if cut).
pub fn wrap(text: &str, size: u32, max_width: u32, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let candidate = if current.is_empty() {
            word.to_string()
        } else {
            format!("{current} {word}")
        };
        if text_size(&candidate, size).0 <= max_width || current.is_empty() {
            current = candidate;
        } else {
            lines.push(std::mem::replace(&mut current, word.to_string()));
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    let cut = lines.len() > max_lines;
    lines.truncate(max_lines);
    if cut {
        if let Some(last) = lines.last_mut() {
            last.push_str(" …");
        }
    }
    lines
        .into_iter()
        .map(|l| fit(&l, size, max_width))
        .collect()
}

/// A grey placeholder tile saying why there is no picture.
pub fn placeholder(side: u32, reason: &str) -> Result<RgbImage> {
    let mut c = Canvas::new(side, side);
    c.fill(0, 0, side, side, LIGHT);
    let size = (side / 12).clamp(9, 24);
    let line = (size as f32 * 1.3) as i32;
    let mut lines = vec!["no image".to_string()];
    lines.extend(wrap(reason, size, side.saturating_sub(12), 4));
    let mut y = (side as i32 - line * lines.len() as i32) / 2;
    for l in &lines {
        c.text(l, 6, y, size, MISMATCH)?;
        y += line;
    }
    Ok(c.img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_naming_a_colour_is_drawn_in_it() {
        let red = value_colour("Red", 0);
        assert!(red[0] > 180 && red[1] < 80 && red[2] < 80, "{red:?}");
        assert_eq!(value_colour("navy-blue", 3), value_colour("navy", 0));
        assert_eq!(value_colour("v-neck", 4), palette(4));
        assert_ne!(value_colour("white", 1), Rgb([255, 255, 255]));
    }

    #[test]
    fn text_is_drawn_with_the_bundled_font() {
        let mut c = Canvas::new(120, 30);
        c.text("neckline", 2, 2, 16, INK).unwrap();
        let dark = c.img.pixels().filter(|p| p[0] < 128).count();
        assert!(dark > 20, "{dark} dark pixels");
        let (w, h) = text_size("neckline", 16);
        assert!(w > 40 && w < 110 && h > 8, "{w}x{h}");
    }

    #[test]
    fn fit_shortens_with_an_ellipsis() {
        let long = "a very long attribute value name indeed";
        let s = fit(long, 12, 80);
        assert!(s.ends_with('…') && text_size(&s, 12).0 <= 80, "{s}");
        assert_eq!(fit("ok", 12, 80), "ok");
    }

    #[test]
    fn overlay_marks_the_attended_region() {
        let img = RgbImage::from_pixel(40, 40, Rgb([128, 128, 128]));
        let mut values = vec![0.0; 16];
        values[0] = 1.0; // top-left cell
        let out = overlay(&img, &AttentionMap { h: 4, w: 4, values });
        assert_eq!(out.dimensions(), (40, 40));
        assert_ne!(out.get_pixel(2, 2), out.get_pixel(37, 37));
        assert_eq!(*out.get_pixel(2, 2), {
            let c = heat(1.0);
            let a = 0.75;
            Rgb([0, 1, 2].map(|k| (128.0 * (1.0 - a) + c[k] as f32 * a).round() as u8))
        });
        let flat = AttentionMap {
            h: 2,
            w: 2,
            values: vec![0.25; 4],
        };
        assert_eq!(overlay(&img, &flat), img);
    }

    #[test]
    fn placeholder_says_why_in_wrapped_lines() {
        let img =
            placeholder(128, "unreadable image: not an image (unrecognised content)").unwrap();
        assert_eq!(img.dimensions(), (128, 128));
        assert!(img.pixels().any(|p| p.0 != LIGHT.0));
        let lines = wrap("one two three four five six seven", 12, 60, 2);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| text_size(l, 12).0 <= 60), "{lines:?}");
        assert!(lines[1].ends_with('…'), "{lines:?}");
    }

    #[test]
    fn sizes_parse_and_refuse_nonsense() {
        assert_eq!(parse_size("800x600").unwrap(), (800, 600));
        for bad in ["800", "0x10", "9000x100", "axb"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}

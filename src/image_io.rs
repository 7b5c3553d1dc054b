//! The one image loader: embedding, `search --image`, training and `catalog check` all
//! decode through [`decode_rgb`], so an image is judged (and oriented) the same way
//! everywhere.
//!
//! What it guarantees, in the order it checks:
//! 1. only regular files are opened, and never in a way that blocks: a FIFO, a device
//!    (`/dev/zero`) or a directory is refused from its metadata, and the open itself is
//!    non-blocking, so a file swapped for a FIFO in between cannot hang the job;
//! 2. the header (the first bytes) is read and its type recognised before anything else;
//! 3. at most [`ImageLimits::max_bytes`] bytes are ever read (the file's size is checked
//!    before reading on, and the read stops one byte past the limit in case the file
//!    grows), so memory per image is bounded whatever the file holds;
//! 4. the decoder refuses images with a side over [`ImageLimits::max_side`] and caps its
//!    allocations;
//! 5. a JPEG must be complete (its entropy-coded data must reach the end-of-image marker):
//!    a truncated JPEG would otherwise decode with its missing part filled grey;
//! 6. the EXIF orientation is applied and the pixels converted to 8-bit RGB as Pillow's
//!    `convert('RGB')` does (alpha dropped, grey replicated, CMYK inverted and multiplied
//!    by the key, the first frame of an animation).

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Largest image side accepted (guards against decompression bombs).
pub const MAX_SIDE: u32 = 16_384;

/// Default cap on an image file's size: 64 MiB. Product photos are a few MB; a larger
/// file is far more likely a mistake (a video, a disk image) than a photo.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// Bytes read to recognise the type.
const HEADER_BYTES: usize = 64;

/// Largest decoded buffer allowed (bytes): a 16,384 x 16,384 RGBA image at 8 bits.
const MAX_ALLOC: u64 = MAX_SIDE as u64 * MAX_SIDE as u64 * 4;

static CONFIGURED_MAX_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_MAX_BYTES);

/// Limits applied to each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most bytes read from one file.
    pub max_bytes: u64,
    /// Longest side, in pixels.
    pub max_side: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_side: MAX_SIDE,
        }
    }
}

impl ImageLimits {
    /// The limits set for this process with [`set_max_bytes`] (the command line sets the
    /// largest file size), the defaults otherwise.
    pub fn configured() -> Self {
        ImageLimits {
            max_bytes: CONFIGURED_MAX_BYTES.load(Ordering::Relaxed),
            max_side: MAX_SIDE,
        }
    }
}

/// Sets the per-file byte cap used by every loader in this process (embed, train,
/// `search --image`, `catalog check`), so one command-line flag covers them all.
pub fn set_max_bytes(max_bytes: u64) {
    CONFIGURED_MAX_BYTES.store(max_bytes.max(1), Ordering::Relaxed);
}

/// Why an image cannot be used. The text is what the rejects report and `catalog check`
/// print.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("file not found")]
    NotFound,
    #[error("not a regular file ({0}); images must be plain files")]
    NotRegularFile(&'static str),
    #[error("cannot read: {0}")]
    Unreadable(String),
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("file is {size} bytes, over the limit of {limit} bytes per image (the maximum image size setting)")]
    TooLarge { size: u64, limit: u64 },
    #[error("not an image (unrecognised content)")]
    NotAnImage,
    #[error("unsupported image format {0} (supported: JPEG, PNG, WebP, GIF, BMP, TIFF)")]
    Unsupported(String),
    #[error("truncated {format} file: {detail}")]
    Truncated {
        format: &'static str,
        detail: String,
    },
    #[error("image is {width}x{height}, over the limit of {limit} pixels per side")]
    TooBig { width: u32, height: u32, limit: u32 },
    #[error("empty image ({0}x{1})")]
    NoPixels(u32, u32),
    #[error("cannot decode: {0}")]
    Decode(String),
}

impl ImageError {
    /// True when the file does not exist (`catalog check` lists these apart).
    pub fn is_missing(&self) -> bool {
        matches!(self, ImageError::NotFound)
    }
}

/// Decodes an image file to 8-bit RGB under the process's configured limits.
pub fn decode_rgb(path: &Path) -> Result<DynamicImage, ImageError> {
    decode_rgb_with(path, &ImageLimits::configured())
}

/// Decodes an image file to 8-bit RGB under the given limits.
pub fn decode_rgb_with(path: &Path, limits: &ImageLimits) -> Result<DynamicImage, ImageError> {
    let bytes = read_bounded(path, limits)?;
    decode_bytes(&bytes, limits)
}

/// Reads a whole image file, refusing what is not a regular file, not an image or over
/// the byte limit before reading past the header.
pub fn read_bounded(path: &Path, limits: &ImageLimits) -> Result<Vec<u8>, ImageError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::NotFound,
        _ => ImageError::Unreadable(io_reason(&e)),
    })?;
    check_regular(&meta)?;
    let mut file = open_nonblocking(path).map_err(|e| ImageError::Unreadable(io_reason(&e)))?;
    // The path may have been replaced between the two looks: judge the open handle too.
    let meta = file
        .metadata()
        .map_err(|e| ImageError::Unreadable(io_reason(&e)))?;
    check_regular(&meta)?;
    let size = meta.len();
    if size == 0 {
        return Err(ImageError::Empty);
    }
    let mut header = Vec::with_capacity(HEADER_BYTES);
    (&mut file)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut header)
        .map_err(|e| ImageError::Unreadable(io_reason(&e)))?;
    if header.is_empty() {
        return Err(ImageError::Empty);
    }
    let format = recognise(&header)?;
    if size > limits.max_bytes {
        return Err(ImageError::TooLarge {
            size,
            limit: limits.max_bytes,
        });
    }
    let _ = format;
    let mut bytes = header;
    bytes.reserve(size.saturating_sub(bytes.len() as u64) as usize);
    // One byte past the limit tells a file that grew since it was measured.
    (&mut file)
        .take(limits.max_bytes + 1 - bytes.len() as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| ImageError::Unreadable(io_reason(&e)))?;
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ImageError::TooLarge {
            size: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    Ok(bytes)
}

/// Decodes the bytes of a whole image file to 8-bit RGB.
pub fn decode_bytes(bytes: &[u8], limits: &ImageLimits) -> Result<DynamicImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let format = recognise(bytes)?;
    if format == ImageFormat::Jpeg {
        jpeg_complete(bytes).map_err(|detail| ImageError::Truncated {
            format: "JPEG",
            detail,
        })?;
    }
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut lim = Limits::default();
    lim.max_image_width = Some(limits.max_side);
    lim.max_image_height = Some(limits.max_side);
    lim.max_alloc = Some(MAX_ALLOC);
    reader.limits(lim);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| decode_error(e, format, limits))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError::NoPixels(w, h));
    }
    if w > limits.max_side || h > limits.max_side {
        return Err(ImageError::TooBig {
            width: w,
            height: h,
            limit: limits.max_side,
        });
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, format, limits))?;
    img.apply_orientation(orientation);
    Ok(match img {
        DynamicImage::ImageRgb8(_) => img,
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    })
}

fn check_regular(meta: &std::fs::Metadata) -> Result<(), ImageError> {
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(());
    }
    Err(ImageError::NotRegularFile(file_kind(&ft)))
}

fn file_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    "not a plain file"
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It has no
    // effect on reads of regular files, the only kind read past this point.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// The OS's words for an I/O error without Rust's "(os error N)" suffix.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The format told by the content (never the file name), limited to the decoders built in.
fn recognise(header: &[u8]) -> Result<ImageFormat, ImageError> {
    let format = image::guess_format(header).map_err(|_| ImageError::NotAnImage)?;
    match format {
        ImageFormat::Jpeg
        | ImageFormat::Png
        | ImageFormat::WebP
        | ImageFormat::Gif
        | ImageFormat::Bmp
        | ImageFormat::Tiff => Ok(format),
        other => Err(ImageError::Unsupported(format!("{other:?}"))),
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        _ => "image",
    }
}

fn decode_error(e: image::ImageError, format: ImageFormat, limits: &ImageLimits) -> ImageError {
    use image::error::{ImageError as E, LimitErrorKind};
    match &e {
        E::Limits(l) if matches!(l.kind(), LimitErrorKind::DimensionError) => ImageError::Decode(
            format!("image larger than {} pixels per side", limits.max_side),
        ),
        E::Limits(_) => ImageError::Decode("image needs more memory than allowed".into()),
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => ImageError::Truncated {
            format: format_name(format),
            detail: "the data ends early".into(),
        },
        E::Unsupported(u) => {
            ImageError::Decode(format!("unsupported {}: {u}", format_name(format)))
        }
        _ => {
            let msg = e.to_string();
            let lower = msg.to_ascii_lowercase();
            if lower.contains("eof") || lower.contains("end of file") || lower.contains("truncat") {
                ImageError::Truncated {
                    format: format_name(format),
                    detail: msg,
                }
            } else {
                ImageError::Decode(msg)
            }
        }
    }
}

/// Checks a JPEG's structure up to its end-of-image marker: every segment's length fits in
/// the file and every scan's entropy-coded data is followed by a marker. Returns what is
/// missing when the file ends early.
fn jpeg_complete(b: &[u8]) -> Result<(), String> {
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return Err("no start-of-image marker".into());
    }
    let mut i = 2;
    let mut scans = 0usize;
    loop {
        // Find the next marker, skipping fill bytes (0xFF repeated).
        if i >= b.len() {
            return Err(if scans == 0 {
                "the file ends before the image data".into()
            } else {
                "the file ends inside the image data (no end-of-image marker)".into()
            });
        }
        if b[i] != 0xFF {
            return Err(format!("expected a marker at byte {i}"));
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return Err("the file ends inside a marker".into());
        };
        i += 1;
        match marker {
            0xD9 => {
                return if scans == 0 {
                    Err("end-of-image marker before any image data".into())
                } else {
                    Ok(())
                };
            }
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = b
            .get(i..i + 2)
            .map(|s| u16::from_be_bytes([s[0], s[1]]) as usize)
        else {
            return Err("the file ends inside a segment header".into());
        };
        if len < 2 || i + len > b.len() {
            return Err(format!(
                "segment 0xFF{marker:02X} at byte {} runs past the end of the file",
                i - 2
            ));
        }
        i += len;
        if marker == 0xDA {
            scans += 1;
            // Entropy-coded data: 0xFF is followed by 0x00 (a stuffed byte), a restart
            // marker or fill 0xFF; anything else starts the next segment.
            loop {
                let Some(off) = b[i..].iter().position(|&x| x == 0xFF) else {
                    return Err(
                        "the file ends inside the image data (no end-of-image marker)".into(),
                    );
                };
                i += off;
                match b.get(i + 1) {
                    None => {
                        return Err(
                            "the file ends inside the image data (no end-of-image marker)".into(),
                        )
                    }
                    Some(0x00) | Some(0xD0..=0xD7) => i += 2,
                    Some(0xFF) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn jpeg_structure_needs_the_end_marker() {
        let soi: &[u8] = &[0xFF, 0xD8];
        let app: &[u8] = &[0xFF, 0xE0, 0x00, 0x04, 1, 2];
        let sos: &[u8] = &[0xFF, 0xDA, 0x00, 0x03, 0];
        let data: &[u8] = &[1, 0xFF, 0x00, 2, 0xFF, 0xD3, 3];
        let eoi: &[u8] = &[0xFF, 0xD9];
        assert_eq!(jpeg_complete(&jpeg(&[soi, app, sos, data, eoi])), Ok(()));
        let cut = jpeg(&[soi, app, sos, data]);
        assert!(jpeg_complete(&cut)
            .unwrap_err()
            .contains("inside the image data"));
        assert!(jpeg_complete(&jpeg(&[soi, &app[..4]]))
            .unwrap_err()
            .contains("runs past the end"));
        assert!(jpeg_complete(&jpeg(&[soi, eoi]))
            .unwrap_err()
            .contains("before any image data"));
    }

    #[test]
    fn io_reason_drops_the_os_error_number() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_reason(&e), "No such file or directory");
    }
}

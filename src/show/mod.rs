//! Pictures of the results: retrieval sheets framed by ground truth, attention overlays,
//! 2-D embedding maps, and one static HTML report gathering them with the evaluation.
//!
//! Drawing goes through `plotters` (charts, shapes, text via `ab_glyph`) and the `image`
//! crate (pixels, PNG); the only font is the bundled DejaVu Sans (assets/fonts/), so the
//! pictures are the same on every machine and nothing is looked up or downloaded.

pub mod attention;
pub mod draw;
pub mod grid;
pub mod report;
pub mod sheet;
pub mod space;

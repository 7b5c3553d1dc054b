//! One layout for every tiled picture (retrieval sheets, attention panels): a title,
//! notes, an optional lead tile (the query) in its own column, a grid of captioned
//! tiles and a legend. Sizes follow the tile size; given a picture size, the largest tile
//! that fits is used and the picture has exactly that size.

use image::{Rgb, RgbImage};

use super::draw::{self, fit, AttentionMap, Canvas, GREY, INK, LIGHT};
use crate::error::{Error, Result};

/// One tile: a square picture, optionally an attention overlay and a frame, and caption
/// lines under it.
pub struct Cell {
    pub image: RgbImage,
    pub overlay: Option<AttentionMap>,
    pub frame: Option<Rgb<u8>>,
    /// Caption lines, each with its colour.
    pub lines: Vec<(String, Rgb<u8>)>,
}

/// What the legend line explains.
pub enum LegendItem {
    /// A colour swatch and its meaning.
    Swatch(Rgb<u8>, String),
    /// The attention colour bar.
    Heat,
    /// Plain text.
    Text(String),
}

pub struct Grid {
    pub title: String,
    /// Lines under the title (degraded pictures say so here), each with its colour.
    pub notes: Vec<(String, Rgb<u8>)>,
    pub lead: Option<Cell>,
    pub cells: Vec<Cell>,
    pub columns: usize,
    pub legend: Vec<LegendItem>,
}

/// Pixel sizes derived from a tile size.
struct Layout {
    tile: u32,
    margin: u32,
    gap: u32,
    border: u32,
    caption_font: u32,
    caption_line: u32,
    title_font: u32,
    header: u32,
    cell_w: u32,
    cell_h: u32,
    lead_w: u32,
    cols: u32,
    rows: u32,
    width: u32,
    height: u32,
}

/// Smallest tile tried when fitting a requested size.
const MIN_TILE: u32 = 24;

impl Grid {
    fn caption_lines(&self) -> u32 {
        self.lead
            .iter()
            .chain(&self.cells)
            .map(|c| c.lines.len())
            .max()
            .unwrap_or(0) as u32
    }

    fn layout(&self, tile: u32) -> Layout {
        let margin = 14;
        let gap = (tile / 12).max(8);
        let border = (tile / 40).max(3);
        let caption_font = (tile / 11).clamp(10, 15);
        let caption_line = (caption_font as f32 * 1.3).ceil() as u32;
        let title_font = (tile / 7).clamp(14, 22);
        let note_line = ((caption_font + 1) as f32 * 1.35).ceil() as u32;
        let header =
            (title_font as f32 * 1.5).ceil() as u32 + self.notes.len() as u32 * note_line + gap;
        let cell_w = tile + 2 * border + gap;
        let cell_h = tile + 2 * border + 4 + self.caption_lines() * caption_line + gap;
        let lead_w = if self.lead.is_some() { cell_w + gap } else { 0 };
        let n = self.cells.len().max(1) as u32;
        let cols = (self.columns.max(1) as u32).min(n);
        let rows = n.div_ceil(cols);
        let footer = if self.legend.is_empty() {
            0
        } else {
            12 + caption_line + caption_font + gap
        };
        let width = 2 * margin + lead_w + cols * cell_w;
        let height = 2 * margin + header + rows * cell_h + footer;
        Layout {
            tile,
            margin,
            gap,
            border,
            caption_font,
            caption_line,
            title_font,
            header,
            cell_w,
            cell_h,
            lead_w,
            cols,
            rows,
            width,
            height,
        }
    }

    /// Draws the grid with `tile`-px tiles, or, when `size` is given, with the largest
    /// tile that fits and exactly that many pixels.
    pub fn render(&self, tile: u32, size: Option<(u32, u32)>) -> Result<RgbImage> {
        Ok(self.render_with_boxes(tile, size)?.0)
    }

    /// As [`Grid::render`], also giving where each picture went (lead first, then the
    /// cells): its box `[x, y, width, height]` inside the frame, and the frame's width.
    pub fn render_with_boxes(
        &self,
        tile: u32,
        size: Option<(u32, u32)>,
    ) -> Result<(RgbImage, Vec<[u32; 4]>, u32)> {
        let layout = match size {
            None => self.layout(tile.max(MIN_TILE)),
            Some((w, h)) => {
                let fits = |t: u32| {
                    let l = self.layout(t);
                    l.width <= w && l.height <= h
                };
                if !fits(MIN_TILE) {
                    return Err(Error::Usage(format!(
                        "a {w}x{h} picture is too small for {} tiles and their captions; \
                         ask for a larger picture",
                        self.cells.len() + self.lead.is_some() as usize
                    )));
                }
                // Largest fitting tile by bisection (sizes grow with the tile).
                let (mut lo, mut hi) = (MIN_TILE, w.max(h));
                while lo < hi {
                    let mid = (lo + hi).div_ceil(2);
                    if fits(mid) {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                let mut l = self.layout(lo);
                l.width = w;
                l.height = h;
                l
            }
        };
        let mut boxes = Vec::new();
        let img = self.draw(&layout, &mut boxes)?;
        Ok((img, boxes, layout.border))
    }

    fn draw(&self, l: &Layout, boxes: &mut Vec<[u32; 4]>) -> Result<RgbImage> {
        let mut c = Canvas::new(l.width, l.height);
        let text_w = l.width.saturating_sub(2 * l.margin);
        let x0 = l.margin as i32;
        let mut y = l.margin as i32;
        c.text(
            &fit(&self.title, l.title_font, text_w),
            x0,
            y,
            l.title_font,
            INK,
        )?;
        y += (l.title_font as f32 * 1.5).ceil() as i32;
        let note_font = l.caption_font + 1;
        for (note, colour) in &self.notes {
            c.text(&fit(note, note_font, text_w), x0, y, note_font, *colour)?;
            y += (note_font as f32 * 1.35).ceil() as i32;
        }
        let top = (l.margin + l.header) as i64;
        if let Some(lead) = &self.lead {
            boxes.push(self.draw_cell(&mut c, l, lead, l.margin as i64, top)?);
            // A rule between the query and its results.
            let rx = (l.margin + l.lead_w) as i64 - (l.gap as i64 + l.gap as i64 / 2);
            c.fill(rx, top, 2, l.rows * l.cell_h - l.gap, LIGHT);
        }
        for (i, cell) in self.cells.iter().enumerate() {
            let (r, col) = (i as u32 / l.cols, i as u32 % l.cols);
            let x = (l.margin + l.lead_w + col * l.cell_w) as i64;
            let y = top + (r * l.cell_h) as i64;
            boxes.push(self.draw_cell(&mut c, l, cell, x, y)?);
        }
        if !self.legend.is_empty() {
            let y = top + (l.rows * l.cell_h) as i64;
            self.draw_legend(&mut c, l, y)?;
        }
        Ok(c.img)
    }

    fn draw_cell(
        &self,
        c: &mut Canvas,
        l: &Layout,
        cell: &Cell,
        x: i64,
        y: i64,
    ) -> Result<[u32; 4]> {
        let b = l.border as i64;
        let mut img = if cell.image.dimensions() == (l.tile, l.tile) {
            cell.image.clone()
        } else {
            draw::square_crop(&cell.image, l.tile)
        };
        if let Some(att) = &cell.overlay {
            img = draw::overlay(&img, att);
        }
        c.paste(&img, x + b, y + b);
        if let Some(colour) = cell.frame {
            c.frame(x + b, y + b, l.tile, l.tile, l.border, colour);
        }
        let cap_w = l.tile + 2 * l.border;
        let mut ty = (y + 2 * b + l.tile as i64 + 4) as i32;
        for (line, colour) in &cell.lines {
            c.text(
                &fit(line, l.caption_font, cap_w),
                x as i32,
                ty,
                l.caption_font,
                *colour,
            )?;
            ty += l.caption_line as i32;
        }
        Ok([(x + b) as u32, (y + b) as u32, l.tile, l.tile])
    }

    fn draw_legend(&self, c: &mut Canvas, l: &Layout, y: i64) -> Result<()> {
        let f = l.caption_font;
        let right = (l.width - l.margin) as i64;
        let mut x = l.margin as i64;
        for item in &self.legend {
            if x >= right {
                break;
            }
            let room = (right - x).max(0) as u32;
            match item {
                LegendItem::Swatch(colour, text) => {
                    c.fill(x, y + 2, f, f, *colour);
                    let t = fit(text, f, room.saturating_sub(f + 6));
                    c.text(&t, (x + f as i64 + 5) as i32, y as i32, f, INK)?;
                    x += (f + 5 + draw::text_size(&t, f).0 + 2 * f) as i64;
                }
                LegendItem::Heat => {
                    let w = 160.min(room);
                    c.text("attention:", x as i32, y as i32, f, INK)?;
                    let lw = draw::text_size("attention:", f).0 as i64 + 6;
                    let w = w.min((right - x - lw).max(0) as u32);
                    c.heat_legend(x + lw, y + 2, w, 12, f.saturating_sub(1).max(9))?;
                    x += lw + w as i64 + 2 * f as i64;
                }
                LegendItem::Text(text) => {
                    let t = fit(text, f, room);
                    c.text(&t, x as i32, y as i32, f, GREY)?;
                    x += (draw::text_size(&t, f).0 + 2 * f) as i64;
                }
            }
        }
        Ok(())
    }
}

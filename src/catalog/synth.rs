//! The synthetic fashion catalog: procedurally drawn garments whose attribute values are
//! known exactly.
//!
//! Local attributes are tied to a region of the garment (neckline, collar at the top,
//! sleeves at the sides, length and silhouette at the bottom); global ones (colour,
//! pattern) cover it all. Nuisance makes overall similarity a poor guide: position, scale
//! and rotation jitter, background colour and clutter, skin tone, pixel noise and
//! occasional occlusion. Every item is drawn from its own RNG stream (seed, index), so the
//! output is byte-identical for a seed whatever the thread count.
//!
//! Output layout (every reader of [`crate::catalog`] is exercised by it):
//! ```text
//! OUT/manifest.csv, OUT/manifest.jsonl     manifests (id,image,split,<attr>...)
//! OUT/schema.json                          attribute and value names, in id order
//! OUT/meta.json, OUT/SynthFashion/...       ASEN split files, images under images/
//! OUT/zappos/...                            CSN/Zappos triplet lists over the same images
//! ```

use std::f32::consts::PI;
use std::path::{Path, PathBuf};

use image::{ImageBuffer, Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::asen_write::{write_asen, AsenSplits};
use super::manifest_write::{write_manifest, ManifestRow};
use super::zappos_write::{write_zappos, TripletList};
use super::{Attribute, Schema};
use crate::error::{Error, IoContext, Result};
use crate::progress::{Progress, ProgressMode};

pub const DATASET: &str = "SynthFashion";
const SPLIT_SEED_SALT: u64 = 0x5eed_5b17;

/// The synthetic catalog's attributes and values, in id order.
pub fn schema() -> Schema {
    let attr = |name: &str, values: &[&str]| Attribute {
        name: name.to_string(),
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    Schema {
        attributes: vec![
            attr("neckline", &["round", "v_neck", "square", "boat", "scoop"]),
            attr(
                "sleeve_length",
                &[
                    "sleeveless",
                    "cap",
                    "short",
                    "elbow",
                    "three_quarter",
                    "long",
                ],
            ),
            attr(
                "garment_length",
                &["crop", "waist", "hip", "thigh", "knee", "ankle"],
            ),
            attr("collar", &["none", "peter_pan", "pointed", "stand"]),
            attr("silhouette", &["fitted", "a_line", "flared"]),
            attr(
                "colour",
                &[
                    "red", "orange", "yellow", "green", "teal", "blue", "purple", "pink",
                ],
            ),
            attr(
                "pattern",
                &[
                    "solid",
                    "horizontal_stripes",
                    "vertical_stripes",
                    "dots",
                    "checks",
                    "diagonal",
                ],
            ),
        ],
    }
}

const NECKLINE: usize = 0;
const SLEEVE: usize = 1;
const LENGTH: usize = 2;
const COLLAR: usize = 3;
const SILHOUETTE: usize = 4;
const COLOUR: usize = 5;
const PATTERN: usize = 6;

const COLOURS: [[f32; 3]; 8] = [
    [0.85, 0.12, 0.12],
    [0.95, 0.50, 0.08],
    [0.95, 0.85, 0.15],
    [0.15, 0.62, 0.18],
    [0.05, 0.58, 0.58],
    [0.12, 0.25, 0.85],
    [0.50, 0.18, 0.70],
    [0.98, 0.50, 0.72],
];
const SKIN: [[f32; 3]; 4] = [
    [0.96, 0.80, 0.69],
    [0.87, 0.67, 0.52],
    [0.66, 0.46, 0.33],
    [0.42, 0.28, 0.20],
];

/// Options of [`generate`].
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub items: usize,
    pub size: u32,
    pub seed: u64,
    /// Write JPEG (quality 90) instead of PNG.
    pub jpeg: bool,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    pub out: PathBuf,
    pub items: usize,
    pub size: u32,
    pub seed: u64,
    pub train: usize,
    pub valid: usize,
    pub test: usize,
    pub seconds: f64,
}

/// The labels of one synthetic item (value id per attribute, schema order).
pub fn item_values(seed: u64, index: usize) -> [u16; 7] {
    let mut rng = item_rng(seed, index);
    draw_values(&mut rng)
}

fn item_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64 + 1);
    rng
}

fn draw_values(rng: &mut ChaCha8Rng) -> [u16; 7] {
    let schema_sizes = [5u16, 6, 6, 4, 3, 8, 6];
    let mut v = [0u16; 7];
    for (slot, n) in v.iter_mut().zip(schema_sizes) {
        *slot = rng.gen_range(0..n);
    }
    v
}

pub fn item_id(index: usize) -> String {
    format!("sf-{index:06}")
}

/// Generates a catalog of `opts.items` garments into `out` (created if needed).
pub fn generate(out: &Path, opts: &SynthOptions, progress: ProgressMode) -> Result<SynthSummary> {
    if opts.items < 10 {
        return Err(Error::Usage(
            "synth needs at least 10 items (8:1:1 splits)".into(),
        ));
    }
    if !(16..=1024).contains(&opts.size) {
        return Err(Error::Usage(format!(
            "image size {} outside 16..=1024 px",
            opts.size
        )));
    }
    let start = std::time::Instant::now();
    let ds = out.join(DATASET);
    let images = ds.join("images");
    std::fs::create_dir_all(&images).at(&images)?;
    let ext = if opts.jpeg { "jpg" } else { "png" };
    let bar = Progress::new("synth", opts.items as u64, progress);
    let values: Vec<[u16; 7]> = (0..opts.items)
        .into_par_iter()
        .map(|i| -> Result<[u16; 7]> {
            let (img, values) = render_item(opts.seed, i, opts.size);
            let path = images.join(format!("{i:06}.{ext}"));
            let saved = if opts.jpeg {
                let file = std::fs::File::create(&path).at(&path)?;
                let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(
                    std::io::BufWriter::new(file),
                    90,
                );
                enc.encode_image(&img)
            } else {
                img.save_with_format(&path, image::ImageFormat::Png)
            };
            saved.map_err(|e| Error::Image {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            bar.inc(1);
            Ok(values)
        })
        .collect::<Result<_>>()?;
    bar.finish();

    // 8:1:1 split of a seeded permutation.
    let mut order: Vec<usize> = (0..opts.items).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.seed ^ SPLIT_SEED_SALT));
    let n_train = opts.items * 8 / 10;
    let n_valid = opts.items / 10;
    let mut train = order[..n_train].to_vec();
    let mut valid = order[n_train..n_train + n_valid].to_vec();
    let mut test = order[n_train + n_valid..].to_vec();
    train.sort_unstable();
    valid.sort_unstable();
    test.sort_unstable();
    let mut split_of = vec![""; opts.items];
    for (name, members) in [("train", &train), ("valid", &valid), ("test", &test)] {
        for &i in members {
            split_of[i] = name;
        }
    }
    let schema = schema();
    let rel_image = |i: usize| format!("images/{i:06}.{ext}");
    let ids: Vec<String> = (0..opts.items).map(item_id).collect();
    let values: Vec<Vec<u16>> = values.iter().map(|v| v.to_vec()).collect();

    // Manifest (CSV, JSON lines) + schema.
    let rows: Vec<ManifestRow> = (0..opts.items)
        .map(|i| ManifestRow {
            id: ids[i].clone(),
            image: format!("{DATASET}/{}", rel_image(i)),
            split: split_of[i],
            values: &values[i],
        })
        .collect();
    write_manifest(out, &schema, &rows)?;

    // ASEN split files.
    let images: Vec<String> = (0..opts.items).map(rel_image).collect();
    write_asen(
        out,
        &AsenSplits {
            dataset: DATASET,
            schema: &schema,
            ids: &ids,
            images: &images,
            values: &values,
            train: &train,
            valid: &valid,
            test: &test,
        },
    )?;

    // Zappos/CSN triplet lists over the same images.
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x7219_1e75);
    let mut lists = Vec::new();
    for (a, attr) in schema.attributes.iter().enumerate() {
        for (file_split, members, per_item) in
            [("train", &train, 2), ("val", &valid, 1), ("test", &test, 1)]
        {
            lists.push(TripletList {
                attribute: &attr.name,
                split: file_split,
                triplets: sample_triplets(
                    &mut rng,
                    members,
                    |i| values[i][a],
                    members.len() * per_item,
                ),
            });
        }
    }
    let filenames: Vec<String> = (0..opts.items)
        .map(|i| format!("../{DATASET}/{}", rel_image(i)))
        .collect();
    write_zappos(&out.join("zappos"), &filenames, &schema.names(), &lists)?;
    Ok(SynthSummary {
        out: out.to_path_buf(),
        items: opts.items,
        size: opts.size,
        seed: opts.seed,
        train: train.len(),
        valid: valid.len(),
        test: test.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Triplets (anchor, far, close) within `members`: close shares the anchor's value, far not.
fn sample_triplets(
    rng: &mut ChaCha8Rng,
    members: &[usize],
    value: impl Fn(usize) -> u16,
    count: usize,
) -> Vec<[usize; 3]> {
    let mut by_value: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for &i in members {
        by_value.entry(value(i)).or_default().push(i);
    }
    let usable: Vec<u16> = by_value
        .iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|(k, _)| *k)
        .collect();
    if usable.is_empty() || by_value.len() < 2 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let v = usable[rng.gen_range(0..usable.len())];
        let same = &by_value[&v];
        let x = same[rng.gen_range(0..same.len())];
        let close = loop {
            let c = same[rng.gen_range(0..same.len())];
            if c != x {
                break c;
            }
        };
        let far = loop {
            let f = members[rng.gen_range(0..members.len())];
            if value(f) != v {
                break f;
            }
        };
        out.push([x, far, close]);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Drawing. Shapes live in garment coordinates: a unit canvas, x right, y down, the
// garment centred on x = 0.5 with its neck at y = 0.16. Pixels are mapped back into
// garment coordinates through the item's random similarity transform.

type Colour = [f32; 3];

#[derive(Clone, Copy)]
struct Ellipse {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
}

impl Ellipse {
    fn contains(&self, x: f32, y: f32) -> bool {
        let dx = (x - self.cx) / self.rx;
        let dy = (y - self.cy) / self.ry;
        dx * dx + dy * dy <= 1.0
    }
}

/// A convex or concave polygon with a bounding box for quick rejection.
struct Polygon {
    points: Vec<(f32, f32)>,
    min: (f32, f32),
    max: (f32, f32),
}

impl Polygon {
    fn new(points: Vec<(f32, f32)>) -> Self {
        let mut min = (f32::MAX, f32::MAX);
        let mut max = (f32::MIN, f32::MIN);
        for &(x, y) in &points {
            min = (min.0.min(x), min.1.min(y));
            max = (max.0.max(x), max.1.max(y));
        }
        Polygon { points, min, max }
    }
    fn contains(&self, x: f32, y: f32) -> bool {
        if x < self.min.0 || x > self.max.0 || y < self.min.1 || y > self.max.1 {
            return false;
        }
        // Even-odd rule.
        let mut inside = false;
        let n = self.points.len();
        let mut j = n - 1;
        for i in 0..n {
            let (xi, yi) = self.points[i];
            let (xj, yj) = self.points[j];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

/// A thick segment (capsule) from a to b.
struct Capsule {
    a: (f32, f32),
    b: (f32, f32),
    r: f32,
}

impl Capsule {
    fn contains(&self, x: f32, y: f32) -> bool {
        let (dx, dy) = (self.b.0 - self.a.0, self.b.1 - self.a.1);
        let t = (((x - self.a.0) * dx + (y - self.a.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
        let (px, py) = (self.a.0 + t * dx - x, self.a.1 + t * dy - y);
        px * px + py * py <= self.r * self.r
    }
}

enum Clutter {
    Disc(Ellipse, Colour),
    Rect(f32, f32, f32, f32, Colour),
}

struct Scene {
    background: Colour,
    clutter: Vec<Clutter>,
    skin: Colour,
    garment: Colour,
    accent: Colour,
    trim: Colour,
    pattern: u16,
    pattern_period: f32,
    head: Ellipse,
    neck: Polygon,
    arms: [Capsule; 2],
    sleeves: Vec<Polygon>,
    torso: Polygon,
    neckline: Neckline,
    collar: Vec<Polygon>,
    collar_discs: Vec<Ellipse>,
    occlusion: Option<(f32, f32, f32, f32, Colour)>,
    // Similarity transform canvas -> garment coordinates.
    cos: f32,
    sin: f32,
    scale: f32,
    shift: (f32, f32),
    noise: f32,
}

enum Neckline {
    Ellipse(Ellipse),
    Polygon(Polygon),
}

impl Neckline {
    fn contains(&self, x: f32, y: f32) -> bool {
        match self {
            Neckline::Ellipse(e) => e.contains(x, y),
            Neckline::Polygon(p) => p.contains(x, y),
        }
    }
}

const NECK_Y: f32 = 0.16;
const SHOULDER: f32 = 0.17;

fn build_scene(rng: &mut ChaCha8Rng, v: &[u16; 7]) -> Scene {
    let c = 0.5;
    let jitter = |rng: &mut ChaCha8Rng, x: f32| x * (1.0 + rng.gen_range(-0.06..0.06));
    let grey = rng.gen_range(0.25..0.92f32);
    let tint: Colour = [
        rng.gen_range(-0.06..0.06),
        rng.gen_range(-0.06..0.06),
        rng.gen_range(-0.06..0.06),
    ];
    let background = [grey + tint[0], grey + tint[1], grey + tint[2]];
    let clutter = (0..rng.gen_range(2..7))
        .map(|_| {
            let g = rng.gen_range(0.2..0.95f32);
            let col = [
                g * rng.gen_range(0.85..1.15),
                g * rng.gen_range(0.85..1.15),
                g * rng.gen_range(0.85..1.15),
            ];
            let (x, y) = (rng.gen_range(0.0..1.0f32), rng.gen_range(0.0..1.0f32));
            if rng.gen_bool(0.5) {
                Clutter::Disc(
                    Ellipse {
                        cx: x,
                        cy: y,
                        rx: rng.gen_range(0.03..0.12),
                        ry: rng.gen_range(0.03..0.12),
                    },
                    col,
                )
            } else {
                Clutter::Rect(
                    x,
                    y,
                    x + rng.gen_range(0.04..0.25),
                    y + rng.gen_range(0.04..0.25),
                    col,
                )
            }
        })
        .collect();
    let skin = SKIN[rng.gen_range(0..SKIN.len())];
    let base = COLOURS[v[COLOUR] as usize];
    let shade = rng.gen_range(0.85..1.1f32);
    let garment = base.map(|x| (x * shade).min(1.0));
    let accent = if rng.gen_bool(0.5) {
        [0.97, 0.97, 0.95]
    } else {
        garment.map(|x| x * 0.45)
    };
    let trim = [0.97, 0.97, 0.97];

    // Torso.
    let hem_y = [0.40, 0.50, 0.60, 0.70, 0.82, 0.94][v[LENGTH] as usize];
    let waist_y = 0.45f32.min(hem_y - 0.02);
    let waist = 0.13;
    let flare = [0.05, 0.32, 0.65][v[SILHOUETTE] as usize];
    let hem_half = waist + 0.02 + (hem_y - waist_y) * flare;
    let torso = Polygon::new(vec![
        (c - SHOULDER, NECK_Y),
        (c + SHOULDER, NECK_Y),
        (c + 0.155, 0.30),
        (c + waist, waist_y),
        (c + hem_half, hem_y),
        (c - hem_half, hem_y),
        (c - waist, waist_y),
        (c - 0.155, 0.30),
    ]);

    // Arms hang outwards from the shoulders; sleeves cover a fraction of them.
    let arm_len = 0.40;
    let angle = jitter(rng, 0.32f32);
    let dir = (angle.sin(), angle.cos());
    let shoulder = (c + SHOULDER - 0.02, NECK_Y + 0.045);
    let hand = (shoulder.0 + dir.0 * arm_len, shoulder.1 + dir.1 * arm_len);
    let mirror = |p: (f32, f32)| (2.0 * c - p.0, p.1);
    let arms = [
        Capsule {
            a: shoulder,
            b: hand,
            r: 0.032,
        },
        Capsule {
            a: mirror(shoulder),
            b: mirror(hand),
            r: 0.032,
        },
    ];
    let cover = [0.0, 0.09, 0.22, 0.45, 0.68, 1.0][v[SLEEVE] as usize];
    let mut sleeves = Vec::new();
    if cover > 0.0 {
        let top = (c + SHOULDER, NECK_Y);
        let pit = (c + 0.15, 0.29);
        let end = (
            shoulder.0 + dir.0 * arm_len * cover,
            shoulder.1 + dir.1 * arm_len * cover,
        );
        // Perpendicular to the arm, for the cuff's width.
        let perp = (dir.1, -dir.0);
        let w = 0.048;
        let right = vec![
            top,
            (top.0 + 0.02, top.1 + 0.005),
            (end.0 + perp.0 * w, end.1 + perp.1 * w),
            (end.0 - perp.0 * w, end.1 - perp.1 * w),
            pit,
        ];
        let left = right.iter().map(|&p| mirror(p)).collect();
        sleeves.push(Polygon::new(right));
        sleeves.push(Polygon::new(left));
    }

    let neckline = match v[NECKLINE] {
        0 => Neckline::Ellipse(Ellipse {
            cx: c,
            cy: NECK_Y,
            rx: 0.06,
            ry: 0.05,
        }),
        1 => Neckline::Polygon(Polygon::new(vec![
            (c - 0.07, NECK_Y - 0.01),
            (c + 0.07, NECK_Y - 0.01),
            (c, 0.29),
        ])),
        2 => Neckline::Polygon(Polygon::new(vec![
            (c - 0.07, NECK_Y - 0.01),
            (c + 0.07, NECK_Y - 0.01),
            (c + 0.07, 0.235),
            (c - 0.07, 0.235),
        ])),
        3 => Neckline::Ellipse(Ellipse {
            cx: c,
            cy: NECK_Y,
            rx: 0.14,
            ry: 0.03,
        }),
        _ => Neckline::Ellipse(Ellipse {
            cx: c,
            cy: NECK_Y,
            rx: 0.095,
            ry: 0.11,
        }),
    };
    let (mut collar, mut collar_discs) = (Vec::new(), Vec::new());
    match v[COLLAR] {
        1 => {
            collar_discs.push(Ellipse {
                cx: c - 0.065,
                cy: NECK_Y + 0.035,
                rx: 0.055,
                ry: 0.04,
            });
            collar_discs.push(Ellipse {
                cx: c + 0.065,
                cy: NECK_Y + 0.035,
                rx: 0.055,
                ry: 0.04,
            });
        }
        2 => {
            collar.push(Polygon::new(vec![
                (c - 0.015, NECK_Y),
                (c - 0.11, NECK_Y - 0.005),
                (c - 0.045, NECK_Y + 0.11),
            ]));
            collar.push(Polygon::new(vec![
                (c + 0.015, NECK_Y),
                (c + 0.11, NECK_Y - 0.005),
                (c + 0.045, NECK_Y + 0.11),
            ]));
        }
        3 => collar.push(Polygon::new(vec![
            (c - 0.055, NECK_Y - 0.06),
            (c + 0.055, NECK_Y - 0.06),
            (c + 0.065, NECK_Y + 0.005),
            (c - 0.065, NECK_Y + 0.005),
        ])),
        _ => {}
    }
    let occlusion = rng.gen_bool(0.15).then(|| {
        let (w, h) = (rng.gen_range(0.12..0.25f32), rng.gen_range(0.12..0.25f32));
        let (x, y) = (rng.gen_range(0.0..1.0 - w), rng.gen_range(0.0..1.0 - h));
        let g = rng.gen_range(0.2..0.9f32);
        (x, y, x + w, y + h, [g, g * 0.95, g * 0.9])
    });
    let rot = rng.gen_range(-8.0..8.0f32) * PI / 180.0;
    let scale = rng.gen_range(0.86..1.0f32);
    let shift = (rng.gen_range(-0.05..0.05f32), rng.gen_range(-0.03..0.04f32));
    Scene {
        background,
        clutter,
        skin,
        garment,
        accent,
        trim,
        pattern: v[PATTERN],
        pattern_period: rng.gen_range(0.09..0.11),
        head: Ellipse {
            cx: c,
            cy: 0.03,
            rx: 0.075,
            ry: 0.085,
        },
        neck: Polygon::new(vec![
            (c - 0.035, 0.0),
            (c + 0.035, 0.0),
            (c + 0.04, NECK_Y + 0.05),
            (c - 0.04, NECK_Y + 0.05),
        ]),
        arms,
        sleeves,
        torso,
        neckline,
        collar,
        collar_discs,
        occlusion,
        cos: rot.cos(),
        sin: rot.sin(),
        scale,
        shift,
        noise: rng.gen_range(0.0..0.04),
    }
}

impl Scene {
    /// Colour of the point (u, v) of the canvas (both in [0, 1]).
    fn shade(&self, u: f32, v: f32) -> Colour {
        if let Some((x0, y0, x1, y1, col)) = self.occlusion {
            if u >= x0 && u <= x1 && v >= y0 && v <= y1 {
                return col;
            }
        }
        // Canvas -> garment coordinates: undo shift, rotation about the centre, scale.
        let (du, dv) = (u - 0.5 - self.shift.0, v - 0.5 - self.shift.1);
        let x = 0.5 + (self.cos * du + self.sin * dv) / self.scale;
        let y = 0.5 + (-self.sin * du + self.cos * dv) / self.scale;

        if self.collar.iter().any(|p| p.contains(x, y))
            || self.collar_discs.iter().any(|e| e.contains(x, y))
        {
            return self.trim;
        }
        let on_torso = self.torso.contains(x, y);
        if on_torso && self.neckline.contains(x, y) {
            return self.skin;
        }
        if on_torso || self.sleeves.iter().any(|p| p.contains(x, y)) {
            return self.fabric(x, y);
        }
        if self.neck.contains(x, y)
            || self.head.contains(x, y)
            || self.arms.iter().any(|a| a.contains(x, y))
        {
            return self.skin;
        }
        for item in self.clutter.iter().rev() {
            match item {
                Clutter::Disc(e, col) if e.contains(u, v) => return *col,
                Clutter::Rect(x0, y0, x1, y1, col)
                    if u >= *x0 && u <= *x1 && v >= *y0 && v <= *y1 =>
                {
                    return *col
                }
                _ => {}
            }
        }
        self.background
    }

    fn fabric(&self, x: f32, y: f32) -> Colour {
        let p = self.pattern_period;
        let frac = |t: f32| t / p - (t / p).floor();
        let accent = match self.pattern {
            1 => frac(y) < 0.45,
            2 => frac(x) < 0.45,
            3 => {
                let (fx, fy) = (frac(x) - 0.5, frac(y) - 0.5);
                fx * fx + fy * fy < 0.09
            }
            4 => (frac(x * 0.8) < 0.5) != (frac(y * 0.8) < 0.5),
            5 => frac((x + y) * 0.75) < 0.45,
            _ => false,
        };
        if accent {
            self.accent
        } else {
            self.garment
        }
    }
}

/// Draws item `index` of the catalog with `seed` at `size` px; returns the image and its
/// attribute values.
pub fn render_item(seed: u64, index: usize, size: u32) -> (RgbImage, [u16; 7]) {
    let mut rng = item_rng(seed, index);
    let values = draw_values(&mut rng);
    let scene = build_scene(&mut rng, &values);
    const SS: u32 = 2;
    let inv = 1.0 / (size * SS) as f32;
    let mut img: RgbImage = ImageBuffer::new(size, size);
    for py in 0..size {
        for px in 0..size {
            let mut acc = [0f32; 3];
            for sy in 0..SS {
                for sx in 0..SS {
                    let u = ((px * SS + sx) as f32 + 0.5) * inv;
                    let v = ((py * SS + sy) as f32 + 0.5) * inv;
                    let col = scene.shade(u, v);
                    for k in 0..3 {
                        acc[k] += col[k];
                    }
                }
            }
            let n = rng.gen_range(-1.0..1.0f32) * scene.noise;
            let px_col =
                acc.map(|a| ((a / (SS * SS) as f32 + n).clamp(0.0, 1.0) * 255.0).round() as u8);
            img.put_pixel(px, py, Rgb(px_col));
        }
    }
    (img, values)
}

/// A grid of images with a caption strip per tile, for people to inspect a catalog.
pub fn contact_sheet(images: &[RgbImage], columns: u32, tile: u32) -> RgbImage {
    let rows = (images.len() as u32).div_ceil(columns.max(1));
    let gap = 4;
    let mut sheet: RgbImage = ImageBuffer::from_pixel(
        columns * (tile + gap) + gap,
        rows * (tile + gap) + gap,
        Rgb([255, 255, 255]),
    );
    for (k, img) in images.iter().enumerate() {
        let resized =
            image::imageops::resize(img, tile, tile, image::imageops::FilterType::Nearest);
        let (col, row) = (k as u32 % columns, k as u32 / columns);
        image::imageops::overlay(
            &mut sheet,
            &resized,
            (gap + col * (tile + gap)) as i64,
            (gap + row * (tile + gap)) as i64,
        );
    }
    sheet
}

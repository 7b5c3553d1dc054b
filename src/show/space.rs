//! Embedding maps (`tailor show space`): one attribute's space projected to 2-D by PCA
//! and drawn as a scatter coloured by value, with a legend; PNG or SVG.
//!
//! Items are sampled (at most `max_points`, chosen by a seeded shuffle) so the map is
//! fast and the same for the same seed. PCA is subspace iteration on the centred sample
//! (two components, seeded start), exact enough for a picture and linear in the data.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use super::draw::{self, value_colour, FONT_FAMILY};
use super::sheet::{CatalogLookup, ValueSource};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::index::Index;

/// Output format, from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MapFormat {
    Png,
    Svg,
}

impl MapFormat {
    pub fn from_path(path: &Path) -> Result<MapFormat> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("png") => Ok(MapFormat::Png),
            Some("svg") => Ok(MapFormat::Svg),
            _ => Err(Error::Usage(format!(
                "{}: give a .png or .svg file name",
                path.display()
            ))),
        }
    }
}

pub struct SpaceRequest<'a> {
    pub index: &'a Index,
    /// Labels when the index has none for the attribute.
    pub catalog: Option<&'a Catalog>,
    pub attr: String,
    pub max_points: usize,
    pub seed: u64,
    pub size: (u32, u32),
}

#[derive(Debug, Clone, Serialize)]
pub struct SpaceSummary {
    pub attribute: String,
    pub method: &'static str,
    pub points: usize,
    pub items: usize,
    pub seed: u64,
    /// Share of the sample's variance along each drawn component.
    pub explained_variance: [f64; 2],
    /// Points per value (the unlabelled last, when any).
    pub values: Vec<(String, usize)>,
    pub labelled: bool,
}

/// The two leading principal directions of the rows of `x` (`n x d`, centred), by
/// subspace iteration; returns the projections (`n x 2`) and the variance shares.
pub fn pca2(x: &[f32], n: usize, d: usize, seed: u64) -> (Vec<[f32; 2]>, [f64; 2]) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut basis: Vec<Vec<f64>> = (0..2)
        .map(|_| {
            (0..d)
                .map(|_| rand::Rng::gen_range(&mut rng, -1.0..1.0))
                .collect()
        })
        .collect();
    let total: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let project =
        |v: &[f64], row: &[f32]| -> f64 { row.iter().zip(v).map(|(&a, &b)| a as f64 * b).sum() };
    let orthonormalise = |b: &mut Vec<Vec<f64>>| {
        for i in 0..b.len() {
            for j in 0..i {
                let dot: f64 = b[i].iter().zip(&b[j]).map(|(a, c)| a * c).sum();
                let bj = b[j].clone();
                b[i].iter_mut().zip(&bj).for_each(|(a, c)| *a -= dot * c);
            }
            let norm = b[i].iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm > 1e-30 {
                b[i].iter_mut().for_each(|a| *a /= norm);
            }
        }
    };
    orthonormalise(&mut basis);
    for _ in 0..60 {
        // basis <- X^T X basis
        let mut next = vec![vec![0f64; d]; 2];
        for r in 0..n {
            let row = &x[r * d..(r + 1) * d];
            for (k, v) in basis.iter().enumerate() {
                let p = project(v, row);
                next[k]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(acc, &a)| *acc += p * a as f64);
            }
        }
        // Order by the Rayleigh quotient so component 1 is the larger.
        let energy = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>();
        if energy(&next[1]) > energy(&next[0]) {
            next.swap(0, 1);
        }
        basis = next;
        orthonormalise(&mut basis);
    }
    // A fixed sign per component: its largest coordinate positive.
    for v in basis.iter_mut() {
        let big = v
            .iter()
            .cloned()
            .fold(0f64, |m, a| if a.abs() > m.abs() { a } else { m });
        if big < 0.0 {
            v.iter_mut().for_each(|a| *a = -*a);
        }
    }
    let mut var = [0f64; 2];
    let points = (0..n)
        .map(|r| {
            let row = &x[r * d..(r + 1) * d];
            let p = [project(&basis[0], row), project(&basis[1], row)];
            var[0] += p[0] * p[0];
            var[1] += p[1] * p[1];
            [p[0] as f32, p[1] as f32]
        })
        .collect();
    let share = |v: f64| if total > 0.0 { v / total } else { 0.0 };
    (points, [share(var[0]), share(var[1])])
}

/// Projects and draws the map into `out` (.png or .svg).
pub fn space_map(req: &SpaceRequest, out: &Path) -> Result<SpaceSummary> {
    let format = MapFormat::from_path(out)?;
    let ix = req.index;
    let dim = ix.dim(&req.attr)?;
    let live: Vec<usize> = (0..ix.len()).filter(|&r| !ix.is_removed(r)).collect();
    if live.is_empty() {
        return Err(Error::invalid(
            ix.dir(),
            "the index is empty: nothing to map",
        ));
    }
    if req.max_points < 2 {
        return Err(Error::Usage(format!(
            "at most {} points: a map needs at least 2",
            req.max_points
        )));
    }
    let mut rows = live.clone();
    if rows.len() > req.max_points {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(req.seed);
        rows.shuffle(&mut rng);
        rows.truncate(req.max_points);
        rows.sort_unstable();
    }
    let vectors = ix.vectors(&req.attr)?;
    let n = rows.len();
    let mut x = Vec::with_capacity(n * dim);
    for &r in &rows {
        x.extend_from_slice(&vectors[r * dim..(r + 1) * dim]);
    }
    let mut mean = vec![0f64; dim];
    for r in 0..n {
        for (m, &v) in mean.iter_mut().zip(&x[r * dim..(r + 1) * dim]) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    for r in 0..n {
        for (v, &m) in x[r * dim..(r + 1) * dim].iter_mut().zip(&mean) {
            *v -= m as f32;
        }
    }
    let (points, explained) = pca2(&x, n, dim, req.seed);

    // Values: from the index's labels, else the catalog's.
    let empty;
    let catalog = match req.catalog {
        Some(c) => c,
        None => {
            empty = Catalog {
                source: ix.dir().to_path_buf(),
                format: crate::catalog::CatalogFormat::Csv,
                image_root: ix.dir().to_path_buf(),
                schema: Default::default(),
                items: Vec::new(),
                labels: Default::default(),
                splits: Default::default(),
                triplets: Vec::new(),
            };
            &empty
        }
    };
    let lookup = CatalogLookup::new(catalog);
    let source = ValueSource::new(ix, &lookup, &req.attr);
    let names: Vec<String> = ix
        .schema()
        .and_then(|s| {
            s.attribute_index(&req.attr)
                .ok()
                .map(|a| s.attributes[a].values.clone())
        })
        .or_else(|| {
            catalog
                .schema
                .attribute_index(&req.attr)
                .ok()
                .map(|a| catalog.schema.attributes[a].values.clone())
        })
        .unwrap_or_default();
    // Group by value; unlabelled points form the last group.
    let unl = names.len();
    let mut groups: Vec<Vec<[f32; 2]>> = vec![Vec::new(); names.len() + 1];
    for (p, &r) in points.iter().zip(&rows) {
        match source.value(r) {
            Some((v, _)) if (v as usize) < unl => groups[v as usize].push(*p),
            _ => groups[unl].push(*p),
        }
    }
    let mut values: Vec<(String, usize)> = names
        .iter()
        .zip(&groups)
        .map(|(n, g)| (n.clone(), g.len()))
        .collect();
    if !groups[unl].is_empty() {
        values.push(("unlabelled".into(), groups[unl].len()));
    }
    let labelled = groups[..unl].iter().any(|g| !g.is_empty());
    let title = format!(
        "{} — PCA of {} of {} items (seed {})",
        req.attr,
        n,
        live.len(),
        req.seed
    );
    let mut labels: Vec<String> = names.clone();
    labels.push(if labelled {
        "unlabelled".into()
    } else {
        "no labels: one colour".into()
    });
    let plot = Plot {
        title: &title,
        groups: &groups,
        labels: &labels,
        explained,
    };
    let (w, h) = req.size;
    match format {
        MapFormat::Png => {
            let mut buf = vec![255u8; (w * h * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
                plot.draw(&root)?;
                root.present().map_err(|e| draw::draw_error("map", e))?;
            }
            let img = image::RgbImage::from_raw(w, h, buf)
                .ok_or_else(|| Error::Usage("internal: map buffer size".into()))?;
            draw::save_png(&img, out)?;
        }
        MapFormat::Svg => {
            {
                let root = SVGBackend::new(out, (w, h)).into_drawing_area();
                plot.draw(&root)?;
                root.present()
                    .map_err(|e| Error::invalid(out, format!("cannot write SVG: {e}")))?;
            }
            if !out.is_file() {
                return Err(Error::invalid(out, "the SVG was not written"));
            }
        }
    }
    Ok(SpaceSummary {
        attribute: req.attr.clone(),
        method: "pca",
        points: n,
        items: live.len(),
        seed: req.seed,
        explained_variance: explained,
        values,
        labelled,
    })
}

/// An axis tick without float noise ("-0.0", "0.30000001").
fn tick(v: f32) -> String {
    let r = (v * 1000.0).round() / 1000.0;
    if r == 0.0 {
        "0".into()
    } else {
        format!("{r}")
    }
}

struct Plot<'a> {
    title: &'a str,
    /// Points per value; the last group is the unlabelled one.
    groups: &'a [Vec<[f32; 2]>],
    labels: &'a [String],
    explained: [f64; 2],
}

impl Plot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        draw::ensure_font();
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| draw::draw_error("map", e);
        root.fill(&WHITE).map_err(err)?;
        let (w, h) = root.dim_in_pixel();
        let font = (h / 45).clamp(11, 16);
        let all = self.groups.iter().flatten();
        let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in all {
            x0 = x0.min(p[0]);
            x1 = x1.max(p[0]);
            y0 = y0.min(p[1]);
            y1 = y1.max(p[1]);
        }
        let pad = |a: f32, b: f32| {
            let m = ((b - a) * 0.05).max(1e-3);
            (a - m, b + m)
        };
        let (x0, x1) = pad(x0, x1);
        let (y0, y1) = pad(y0, y1);
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, (FONT_FAMILY, font + 4))
            .margin(12)
            .x_label_area_size(font * 3)
            .y_label_area_size(font * 4)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .x_desc(format!(
                "PC1 ({:.1}% of variance)",
                100.0 * self.explained[0]
            ))
            .y_desc(format!(
                "PC2 ({:.1}% of variance)",
                100.0 * self.explained[1]
            ))
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style((FONT_FAMILY, font))
            .axis_desc_style((FONT_FAMILY, font))
            .draw()
            .map_err(err)?;
        let radius = if self.groups.iter().map(Vec::len).sum::<usize>() > 1000 {
            2
        } else {
            3
        };
        let last = self.groups.len() - 1;
        for (i, g) in self.groups.iter().enumerate() {
            if g.is_empty() {
                continue;
            }
            let c = if i == last {
                RGBColor(150, 150, 150)
            } else {
                let p = value_colour(&self.labels[i], i);
                RGBColor(p[0], p[1], p[2])
            };
            chart
                .draw_series(
                    g.iter()
                        .map(|p| Circle::new((p[0], p[1]), radius, c.filled())),
                )
                .map_err(err)?
                .label(format!("{} ({})", self.labels[i], g.len()))
                .legend(move |(x, y)| Circle::new((x + 6, y), 5, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT_FAMILY, font))
            .draw()
            .map_err(err)?;
        let _ = w;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_direction_of_largest_spread() {
        // Points along (1, 1, 0) with a little spread along (0, 0, 1).
        let mut x = Vec::new();
        for i in 0..50 {
            let t = i as f32 - 24.5;
            x.extend_from_slice(&[t, t, 0.1 * ((i % 3) as f32 - 1.0)]);
        }
        let (p, share) = pca2(&x, 50, 3, 7);
        assert!(share[0] > 0.99, "{share:?}");
        // The projection on PC1 is t * sqrt(2), up to sign.
        assert!(
            (p[0][0].abs() - 24.5 * 2f32.sqrt()).abs() < 1e-3,
            "{:?}",
            p[0]
        );
        let (q, _) = pca2(&x, 50, 3, 7);
        assert_eq!(p, q, "same seed, same map");
    }
}

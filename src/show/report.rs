//! `tailor report`: one static HTML page (no scripts, no network) with the pictures beside
//! it: identity and date, MAP per attribute with the random baseline and P/R/nDCG@k, a
//! bar chart, ANN-vs-exact MAP and recall, the per-value breakdown, triplet accuracy when
//! the catalog has triplets, retrieval sheets with attention, attention panels and one
//! embedding map per attribute.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use super::attention;
use super::draw::{self, FONT_FAMILY};
use super::sheet::{self, SheetQuery, SheetRequest};
use super::space::{self, SpaceRequest};
use crate::catalog::Catalog;
use crate::error::{Error, IoContext, Result};
use crate::eval::index_source::GraphSearch;
use crate::eval::{self, source, MapOptions, MapReport, NeighbourSearch, TripletReport};
use crate::index::Index;
use crate::index::MANIFEST_FILE;
use crate::model::Model;
use crate::model::ModelRecord;
use crate::progress::{Progress, ProgressMode};

pub struct ReportRequest<'a> {
    pub index: &'a Index,
    pub catalog: &'a Catalog,
    /// The index's model (identity checked by the caller); without it the report has no
    /// attention and says so.
    pub model: Option<&'a Model>,
    pub out: &'a Path,
    pub split: String,
    pub ks: Vec<usize>,
    pub ef: usize,
    pub ann_k: usize,
    /// Results per retrieval sheet.
    pub k: usize,
    /// Images with attention panels.
    pub attention_images: usize,
    pub max_points: usize,
    pub seed: u64,
    pub progress: ProgressMode,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    pub html: PathBuf,
    /// Every file the page references, beside it.
    pub files: Vec<PathBuf>,
    pub created_utc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_map: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ann_map: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triplet_accuracy: Option<f64>,
    /// Parts left out or degraded, as the page says.
    pub notes: Vec<String>,
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time (civil-from-days, proleptic Gregorian).
pub fn utc_string(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = crate::embed::lock::utc_parts(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// Text made safe for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A file-name-safe form of an attribute name.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

/// Writes the report into `req.out` (created if needed).
pub fn write_report(req: &ReportRequest) -> Result<ReportSummary> {
    let ix = req.index;
    if ix.live_len() == 0 {
        return Err(Error::invalid(
            ix.dir(),
            "the index is empty: nothing to report",
        ));
    }
    std::fs::create_dir_all(req.out).at(req.out)?;
    let attrs: Vec<String> = ix.attributes().to_vec();
    let created = utc_string(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    let steps = 3 + 2 * attrs.len() as u64 + req.attention_images as u64;
    let progress = Progress::new("report", steps, req.progress);
    let mut notes: Vec<String> = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();

    // Evaluation: exact and from the graphs.
    let sets = match source::sets_from_catalog(req.catalog, &req.split, ix) {
        Ok(s) => s,
        Err(e) => {
            notes.push(format!("no MAP: {e}"));
            Vec::new()
        }
    };
    let report: Option<MapReport> = if sets.is_empty() {
        if notes.is_empty() {
            notes.push(format!("no MAP: no attribute has {} queries", req.split));
        }
        None
    } else {
        let options = MapOptions {
            ks: req.ks.clone(),
            ann_k: req.ann_k,
            progress: ProgressMode::Quiet,
            ..MapOptions::default()
        };
        let searcher = GraphSearch {
            index: ix,
            ef: req.ef,
        };
        Some(eval::evaluate_map(
            ix,
            &sets,
            Some(&searcher as &dyn NeighbourSearch),
            &options,
        )?)
    };
    progress.inc(1);
    let chart = match &report {
        Some(r) => {
            let path = req.out.join("map.png");
            map_chart(r, &path)?;
            files.push(path);
            Some("map.png")
        }
        None => None,
    };
    progress.inc(1);
    let triplets: Option<TripletReport> =
        if req.catalog.triplets.iter().any(|t| t.split == req.split) {
            let conds = source::triplets_from_catalog(req.catalog, &req.split, ix)?;
            Some(eval::evaluate_triplets(ix, &conds)?)
        } else {
            None
        };
    progress.inc(1);

    // Retrieval sheets: per attribute, a query drawn (seeded) from its query list.
    let mut sheets: Vec<(String, String, sheet::SheetSummary)> = Vec::new();
    if req.model.is_none() {
        notes.push(
            "no model: retrieval sheets without attention, no attention panels \
             (give a model file, or keep the one the index records)"
                .into(),
        );
    }
    for (i, attr) in attrs.iter().enumerate() {
        let query = sets
            .iter()
            .find(|s| &s.name == attr)
            .filter(|s| !s.queries.is_empty())
            .map(|s| {
                let pick = (req.seed as usize).wrapping_add(i * 7919) % s.queries.len();
                ix.id(s.queries[pick].0).to_string()
            })
            .or_else(|| {
                (0..ix.len())
                    .find(|&r| !ix.is_removed(r))
                    .map(|r| ix.id(r).to_string())
            });
        let Some(id) = query else { continue };
        let sreq = SheetRequest {
            index: ix,
            catalog: req.catalog,
            model: req.model,
            query: SheetQuery::Item(id),
            attr: attr.clone(),
            k: req.k,
            ef: req.ef,
            exact: false,
            explain: req.model.is_some(),
            tile: 128,
            size: None,
        };
        let name = format!("sheet-{:02}-{}.png", i + 1, slug(attr));
        let (img, summary) = sheet::search_sheet(&sreq)?;
        let path = req.out.join(&name);
        draw::save_png(&img, &path)?;
        files.push(path);
        sheets.push((attr.clone(), name, summary));
        progress.inc(1);
    }

    // Attention panels for the first few sheets' queries.
    let mut panels: Vec<(String, String)> = Vec::new();
    if let Some(model) = req.model {
        let lookup = sheet::CatalogLookup::new(req.catalog);
        let all: Vec<usize> = (0..model.config().num_attributes()).collect();
        for (n, (_, _, s)) in sheets.iter().take(req.attention_images).enumerate() {
            let Some(path) = lookup.image_path(&s.query) else {
                continue;
            };
            let Ok(img) = crate::encode::decode::decode_rgb(&path) else {
                notes.push(format!("attention: cannot decode {}", path.display()));
                continue;
            };
            let (pic, _) = attention::panels(model, &img.to_rgb8(), &s.query, &all, 112, None)?;
            let name = format!("attention-{:02}.png", n + 1);
            let out = req.out.join(&name);
            draw::save_png(&pic, &out)?;
            files.push(out);
            panels.push((s.query.clone(), name));
            progress.inc(1);
        }
    }

    // One embedding map per attribute.
    let mut maps: Vec<(String, String, space::SpaceSummary)> = Vec::new();
    for (i, attr) in attrs.iter().enumerate() {
        let name = format!("space-{:02}-{}.png", i + 1, slug(attr));
        let path = req.out.join(&name);
        let summary = space::space_map(
            &SpaceRequest {
                index: ix,
                catalog: Some(req.catalog),
                attr: attr.clone(),
                max_points: req.max_points,
                seed: req.seed,
                size: (640, 480),
            },
            &path,
        )?;
        files.push(path);
        maps.push((attr.clone(), name, summary));
        progress.inc(1);
    }
    if !sheets.iter().any(|(_, _, s)| s.judged) {
        notes.push(
            "the index and catalog carry no labels for the sheets' queries: results are not framed"
                .into(),
        );
    }

    let record = ModelRecord::from_json(req.index.model(), &req.index.dir().join(MANIFEST_FILE))?;
    let html = page(&Page {
        record: record.as_ref(),
        req,
        created: &created,
        report: report.as_ref(),
        chart,
        triplets: triplets.as_ref(),
        sheets: &sheets,
        panels: &panels,
        maps: &maps,
        notes: &notes,
    });
    let html_path = req.out.join("index.html");
    std::fs::write(&html_path, html).at(&html_path)?;
    progress.finish();
    Ok(ReportSummary {
        html: html_path,
        files,
        created_utc: created,
        map: report.as_ref().map(|r| r.map),
        random_map: report.as_ref().map(|r| r.random_map),
        ann_map: report.as_ref().and_then(|r| r.ann_map),
        triplet_accuracy: triplets.as_ref().map(|t| t.accuracy),
        notes,
    })
}

/// A bar series: its name, colour and value per attribute.
type Series = (
    &'static str,
    RGBColor,
    Box<dyn Fn(&eval::AttributeMap) -> Option<f64>>,
);

/// Bars per attribute: exact MAP, MAP from the graphs, the random baseline.
fn map_chart(r: &MapReport, path: &Path) -> Result<()> {
    let n = r.attributes.len();
    let (w, h) = ((160 + 110 * n as u32).max(560), 380u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        draw::ensure_font();
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| draw::draw_error("MAP chart", e);
        root.fill(&WHITE).map_err(err)?;
        let top = r
            .attributes
            .iter()
            .flat_map(|a| [a.map, a.random_map, a.ann.as_ref().map_or(0.0, |x| x.map)])
            .fold(0.0f64, f64::max);
        let ymax = ((top * 100.0 / 10.0).ceil() * 10.0).clamp(10.0, 100.0);
        let mut chart = ChartBuilder::on(&root)
            .caption("MAP per attribute (%)", (FONT_FAMILY, 18))
            .margin(14)
            .x_label_area_size(34)
            .y_label_area_size(46)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("MAP %")
            .label_style((FONT_FAMILY, 13))
            .axis_desc_style((FONT_FAMILY, 13))
            .draw()
            .map_err(err)?;
        let series: [Series; 3] = [
            ("exact", RGBColor(31, 119, 180), Box::new(|a| Some(a.map))),
            (
                "HNSW",
                RGBColor(255, 127, 14),
                Box::new(|a| a.ann.as_ref().map(|x| x.map)),
            ),
            (
                "random",
                RGBColor(150, 150, 150),
                Box::new(|a| Some(a.random_map)),
            ),
        ];
        for (s, (label, colour, value)) in series.iter().enumerate() {
            let colour = *colour;
            let bars: Vec<Rectangle<(f64, f64)>> = r
                .attributes
                .iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    let v = value(a)? * 100.0;
                    let x = i as f64 + 0.12 + s as f64 * 0.26;
                    Some(Rectangle::new([(x, 0.0), (x + 0.24, v)], colour.filled()))
                })
                .collect();
            if bars.is_empty() {
                continue;
            }
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(*label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT_FAMILY, 13))
            .draw()
            .map_err(err)?;
        // Attribute names under their groups (drawn on the whole picture, not clipped to
        // the plotting area).
        let slot = chart.backend_coord(&(1.0, 0.0)).0 - chart.backend_coord(&(0.0, 0.0)).0;
        for (i, a) in r.attributes.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let name = draw::fit(&a.name, 13, (slot - 6).max(10) as u32);
            let tw = draw::text_size(&name, 13).0 as i32;
            root.draw_text(
                &name,
                &TextStyle::from((FONT_FAMILY, 13).into_font()).color(&BLACK),
                (px - tw / 2, py + 8),
            )
            .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::Usage("internal: chart buffer size".into()))?;
    draw::save_png(&img, path)
}

struct Page<'a> {
    req: &'a ReportRequest<'a>,
    /// What the index records about its model.
    record: Option<&'a ModelRecord>,
    created: &'a str,
    report: Option<&'a MapReport>,
    chart: Option<&'a str>,
    triplets: Option<&'a TripletReport>,
    sheets: &'a [(String, String, sheet::SheetSummary)],
    panels: &'a [(String, String)],
    maps: &'a [(String, String, space::SpaceSummary)],
    notes: &'a [String],
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}\
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}\
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}.id td{text-align:left}\
img{max-width:100%;border:1px solid #eee}figure{margin:12px 0}figcaption{font-size:13px;color:#555}\
.note{color:#b00;font-size:14px}.muted{color:#666;font-size:13px}.grid{display:flex;flex-wrap:wrap;gap:12px}\
.grid figure{flex:1 1 460px}details{margin:6px 0}summary{cursor:pointer;font-weight:bold}";

fn page(p: &Page) -> String {
    let req = p.req;
    let ix = req.index;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>tailor report — {}</title><style>{STYLE}</style></head><body>\n",
        esc(&ix.dir().display().to_string())
    );
    let _ = writeln!(
        h,
        "<h1>tailor report</h1><p class=\"muted\">made {} by tailor {}</p>",
        esc(p.created),
        env!("CARGO_PKG_VERSION")
    );
    // Identity.
    let record = p.record;
    let arch = record.and_then(|r| r.arch()).map(|a| a.to_string());
    let rows: Vec<(&str, String)> = vec![
        ("index", ix.dir().display().to_string()),
        (
            "items",
            format!("{} ({} removed)", ix.len(), ix.len() - ix.live_len()),
        ),
        ("attributes", ix.attributes().join(", ")),
        (
            "model identity",
            record
                .and_then(|r| r.identity.clone())
                .unwrap_or_else(|| "not recorded".into()),
        ),
        (
            "model architecture",
            arch.unwrap_or_else(|| "not recorded".into()),
        ),
        (
            "model file",
            record
                .and_then(|r| r.path.as_ref())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "not recorded".into()),
        ),
        (
            "model for attention",
            match req.model {
                Some(m) => format!(
                    "{} (identity {})",
                    m.config().arch,
                    m.identity().unwrap_or_default()
                ),
                None => "none".into(),
            },
        ),
        ("catalog", req.catalog.source.display().to_string()),
        ("split", req.split.clone()),
        (
            "graph search",
            format!("ef {}, top {} per query for MAP", req.ef, req.ann_k),
        ),
    ];
    h.push_str("<h2>Identity</h2><table class=\"id\">");
    for (k, v) in rows {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    h.push_str("</table>\n");
    for n in p.notes {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(n));
    }

    if let Some(r) = p.report {
        let _ = write!(
            h,
            "<h2>Retrieval quality ({} split)</h2><p>MAP <b>{}%</b> over {} queries; a random \
             ranking gives {}% (exact expectation).",
            esc(&req.split),
            pct(r.map),
            r.queries,
            pct(r.random_map)
        );
        if let (Some(a), Some(rec)) = (r.ann_map, r.ann_recall_at_k) {
            let _ = write!(
                h,
                " From the HNSW graphs: MAP {}%, recall@{} against exact ranking {}%.",
                pct(a),
                req.ann_k,
                pct(rec)
            );
        }
        h.push_str("</p>\n<table><tr><th>attribute</th><th>queries</th><th>candidates</th><th>MAP %</th><th>random %</th><th>HNSW MAP %</th><th>recall@k %</th>");
        for k in &r.ks {
            let _ = write!(h, "<th>P@{k}</th><th>R@{k}</th><th>nDCG@{k}</th>");
        }
        h.push_str("</tr>");
        for a in &r.attributes {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td>",
                esc(&a.name),
                a.queries,
                a.candidates,
                pct(a.map),
                pct(a.random_map),
                a.ann.as_ref().map_or("–".into(), |x| pct(x.map)),
                a.ann.as_ref().map_or("–".into(), |x| pct(x.recall_at_k)),
            );
            for k in &r.ks {
                let f = |m: &std::collections::BTreeMap<usize, f64>| {
                    m.get(k).map_or("–".into(), |v| pct(*v))
                };
                let _ = write!(
                    h,
                    "<td>{}</td><td>{}</td><td>{}</td>",
                    f(&a.precision_at),
                    f(&a.recall_at),
                    f(&a.ndcg_at)
                );
            }
            h.push_str("</tr>");
        }
        h.push_str("</table><p class=\"muted\">Percentages. P/R/nDCG@k from the exact ranking; ties rank by candidate order.</p>\n");
        if let Some(c) = p.chart {
            let _ = writeln!(
                h,
                "<figure><img src=\"{}\" alt=\"bar chart of MAP per attribute\"><figcaption>Exact MAP, MAP from the HNSW graphs and the random baseline, per attribute.</figcaption></figure>",
                esc(c)
            );
        }
        h.push_str("<h2>Per value</h2>");
        for a in &r.attributes {
            let _ = write!(
                h,
                "<details><summary>{} ({} values)</summary><table><tr><th>value</th><th>queries</th><th>relevant candidates</th><th>MAP %</th><th>random %</th><th>top-1 %</th><th>top-1 confused with</th></tr>",
                esc(&a.name),
                a.values.len()
            );
            for v in &a.values {
                let conf: Vec<String> = v
                    .top1_confused_with
                    .iter()
                    .take(3)
                    .map(|(n, c)| format!("{n} ({c})"))
                    .collect();
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                    esc(&v.value),
                    v.queries,
                    v.relevant_candidates,
                    pct(v.map),
                    pct(v.random_map),
                    pct(v.top1_accuracy),
                    esc(&conf.join(", "))
                );
            }
            h.push_str("</table></details>\n");
        }
    }
    if let Some(t) = p.triplets {
        let _ = write!(
            h,
            "<h2>Triplet accuracy</h2><p>{}% of {} triplets have s(a,c) &gt; s(a,b) (ties count as wrong).</p><table><tr><th>condition</th><th>triplets</th><th>correct</th><th>ties</th><th>accuracy %</th></tr>",
            pct(t.accuracy),
            t.triplets
        );
        for c in &t.conditions {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.name),
                c.triplets,
                c.correct,
                c.ties,
                pct(c.accuracy)
            );
        }
        h.push_str("</table>\n");
    }
    if !p.sheets.is_empty() {
        h.push_str("<h2>Retrieval sheets</h2><p class=\"muted\">A query per attribute (blue frame) and its nearest items in that attribute's space; green: same value as the query, red: another value. With a model, each picture carries the attribute's spatial attention.</p>\n");
        for (attr, file, s) in p.sheets {
            let right = s
                .results
                .iter()
                .filter(|r| r.same_value == Some(true))
                .count();
            let cap = if s.judged {
                format!(
                    "{attr}: query {} ({}), {right} of {} results share its value",
                    s.query,
                    s.query_value.as_deref().unwrap_or("?"),
                    s.results.len()
                )
            } else {
                format!("{attr}: query {} (results not judged)", s.query)
            };
            let _ = writeln!(
                h,
                "<figure><img src=\"{}\" alt=\"retrieval sheet for {}\"><figcaption>{}</figcaption></figure>",
                esc(file),
                esc(attr),
                esc(&cap)
            );
        }
    }
    if !p.panels.is_empty() {
        h.push_str("<h2>Attention</h2><p class=\"muted\">Each attribute's spatial attention over the same image, upsampled from the backbone map (AG-MAN: its attribute-guided and spatial-gate levels).</p>\n");
        for (id, file) in p.panels {
            let _ = writeln!(
                h,
                "<figure><img src=\"{}\" alt=\"attention panels for {}\"><figcaption>{}</figcaption></figure>",
                esc(file),
                esc(id),
                esc(id)
            );
        }
    }
    if !p.maps.is_empty() {
        h.push_str("<h2>Embedding maps</h2><div class=\"grid\">\n");
        for (attr, file, s) in p.maps {
            let _ = writeln!(
                h,
                "<figure><img src=\"{}\" alt=\"PCA map of {}\"><figcaption>{}: PCA of {} of {} items (seed {}), {:.1}% + {:.1}% of variance{}</figcaption></figure>",
                esc(file),
                esc(attr),
                esc(attr),
                s.points,
                s.items,
                s.seed,
                100.0 * s.explained_variance[0],
                100.0 * s.explained_variance[1],
                if s.labelled { "" } else { "; no labels" }
            );
        }
        h.push_str("</div>\n");
    }
    h.push_str("</body></html>\n");
    h
}

/// The `src` of every `<img>` in a page (for checking a report's files).
pub fn image_sources(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("src=\"") {
        rest = &rest[i + 5..];
        if let Some(j) = rest.find('"') {
            out.push(rest[..j].to_string());
            rest = &rest[j..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_string(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_string(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_string(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn html_is_escaped_and_sources_found() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let srcs = image_sources("<img src=\"a.png\"><p>x</p><img alt=\"y\" src=\"b c.png\">");
        assert_eq!(srcs, ["a.png", "b c.png"]);
        assert_eq!(slug("sleeve length/x"), "sleeve_length_x");
    }
}

//! Memory-mapped data files of an index: vectors (f32 and compact), the id table,
//! labels and tombstones. Opening checks headers and exact lengths only; nothing is
//! read in full.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::Mmap;

use super::format::{
    add, align_up, cast, check_len, map_file, map_open_file, mul, vector_rows_align, CrcWriter,
    Dtype, FileEntry, IdsHeader, LabelsHeader, TombstonesHeader, VectorHeader, HEADER_LEN,
    VECTOR_ROWS_ALIGN,
};
use crate::catalog::ValueId;
use crate::error::{Error, Result};
use crate::index::hnsw::{bits, bits4};

/// Value stored in a label file for "no label".
pub const NO_LABEL: ValueId = ValueId::MAX;

/// A mapped vector file: f32 rows, f16 rows, or int8 rows with per-row scales.
///
/// f32 rows are mapped with `MADV_RANDOM`: a graph search re-scores a few rows, and the
/// kernel's read-ahead would otherwise pull in their neighbours (128 KiB and more per
/// fault), so resident memory would grow towards the file size. Whole-matrix readers
/// (exact search, evaluation, export, rebuilds) get a second, sequential map of the same
/// open file ([`VectorFile::f32_rows_bulk`]), made on first use. The compact copy keeps
/// the default read-ahead: it is the graph walk's working set. A re-scoring tier is read
/// like the f32 rows and is advised the same way by the reader.
pub struct VectorFile {
    path: PathBuf,
    /// Kept open so the bulk map sees this file even after a newer generation unlinks it.
    file: File,
    map: Mmap,
    bulk: OnceLock<Mmap>,
    pub dtype: Dtype,
    pub count: usize,
    pub dim: usize,
    /// Byte offset of the rows (after the scales for int8, the corrections for bit1).
    rows_at: u64,
    /// Rotation seed (header field `c`) of a bit1 file.
    pub seed: u64,
}

impl VectorFile {
    pub fn open(path: &Path) -> Result<VectorFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let map = map_open_file(&file, path)?;
        let h = VectorHeader::parse(&map, path)?;
        let (dtype, count, dim) = (h.dtype, h.count, h.dim);
        if dim == 0 || dim > u32::MAX as u64 {
            return Err(Error::corrupted(path, format!("invalid dimension {dim}")));
        }
        let cells = mul(count, dim, path)?;
        let align = vector_rows_align(h.version);
        let (rows_at, rows_bytes) = match dtype {
            Dtype::F32 => (align_up(HEADER_LEN as u64, align), mul(cells, 4, path)?),
            Dtype::F16 => (align_up(HEADER_LEN as u64, align), mul(cells, 2, path)?),
            Dtype::Int8 => (
                align_up(add(HEADER_LEN as u64, mul(count, 4, path)?, path)?, align),
                cells,
            ),
            Dtype::Bit1 => (
                align_up(add(HEADER_LEN as u64, mul(count, 8, path)?, path)?, align),
                mul(count, bits::code_words(dim as usize) as u64 * 8, path)?,
            ),
            Dtype::Bit4 => (
                align_up(add(HEADER_LEN as u64, mul(count, 16, path)?, path)?, align),
                mul(count, bits4::code_bytes(dim as usize) as u64, path)?,
            ),
        };
        check_len(
            map.len(),
            add(rows_at, rows_bytes, path)?,
            path,
            "the vectors",
        )?;
        let file = VectorFile {
            path: path.to_path_buf(),
            file,
            map,
            bulk: OnceLock::new(),
            dtype,
            count: count as usize,
            dim: dim as usize,
            rows_at,
            seed: h.seed,
        };
        if dtype == Dtype::F32 {
            file.advise_random();
        }
        Ok(file)
    }

    /// Advises the map for random reads, as for f32 rows (see the type's doc): for a
    /// copy a query reads a few scattered rows of, as it does a re-scoring tier's.
    pub fn advise_random(&self) {
        // Only a hint: a kernel that refuses it still gives correct reads.
        #[cfg(unix)]
        let _ = self.map.advise(memmap2::Advice::Random);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All f32 rows, row-major (only for `Dtype::F32`), for reading a few rows: no
    /// read-ahead.
    pub fn f32_rows(&self) -> Result<&[f32]> {
        self.expect(Dtype::F32)?;
        cast(
            &self.map,
            self.rows_at,
            (self.count * self.dim) as u64,
            &self.path,
        )
    }

    /// The same rows from a map advised for sequential reading (for passes over all
    /// rows). Mapped on first call; later calls reuse it.
    pub fn f32_rows_bulk(&self) -> Result<&[f32]> {
        self.expect(Dtype::F32)?;
        let map = match self.bulk.get() {
            Some(m) => m,
            None => {
                let m = map_open_file(&self.file, &self.path)?;
                check_len(m.len(), self.map.len() as u64, &self.path, "the vectors")?;
                #[cfg(unix)]
                let _ = m.advise(memmap2::Advice::Sequential);
                self.bulk.get_or_init(|| m)
            }
        };
        cast(
            map,
            self.rows_at,
            (self.count * self.dim) as u64,
            &self.path,
        )
    }

    /// What `index verify` adds to [`VectorFile::open`]: the padding before the rows is
    /// zero, every f32 and f16 value is finite, and every int8 scale is finite and > 0.
    /// Reads the whole file.
    pub fn check(&self) -> Result<()> {
        let pad_from = match self.dtype {
            Dtype::Int8 => HEADER_LEN + 4 * self.count,
            Dtype::Bit1 => HEADER_LEN + 8 * self.count,
            Dtype::Bit4 => HEADER_LEN + 16 * self.count,
            _ => HEADER_LEN,
        };
        if self.map[pad_from..self.rows_at as usize]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(Error::corrupted(
                &self.path,
                "the padding before the rows is not zero",
            ));
        }
        let bad_row = |i: usize, what: &str| {
            Error::corrupted(
                &self.path,
                format!("row {} has {what}", i / self.dim.max(1)),
            )
        };
        match self.dtype {
            Dtype::F32 => {
                if let Some(i) = self.f32_rows_bulk()?.iter().position(|x| !x.is_finite()) {
                    return Err(bad_row(i, "a non-finite value"));
                }
            }
            Dtype::F16 => {
                let inf_or_nan = |h: &u16| h & 0x7c00 == 0x7c00;
                if let Some(i) = self.f16_rows()?.iter().position(inf_or_nan) {
                    return Err(bad_row(i, "a non-finite value"));
                }
            }
            Dtype::Int8 => {
                let (scales, _) = self.int8_rows()?;
                if let Some(r) = scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(Error::corrupted(
                        &self.path,
                        format!(
                            "row {r} has int8 scale {}, not a finite positive number",
                            scales[r]
                        ),
                    ));
                }
            }
            Dtype::Bit1 => {
                // dot = |o'|_1 / sqrt(P) lies in [1/sqrt(P), 1] for a unit row, and the
                // residual in [0, 1] (both up to f32 rounding).
                let (corr, _) = self.bit1_rows()?;
                let lo = 1.0 / (bits::padded_dim(self.dim) as f32).sqrt() - 1e-4;
                // `contains` is false for NaN, so non-finite terms fail too.
                let bad = |c: &bits::Correction| {
                    !((lo..=1.0001).contains(&c.dot) && (0.0..=1.0001).contains(&c.residual))
                };
                if let Some(r) = corr.iter().position(bad) {
                    return Err(Error::corrupted(
                        &self.path,
                        format!(
                            "row {r} has bit1 corrections dot {} residual {}, outside \
                             [{lo}, 1] and [0, 1]",
                            corr[r].dot, corr[r].residual
                        ),
                    ));
                }
            }
            Dtype::Bit4 => {
                let (terms, _) = self.bit4_rows()?;
                let bad = |t: &bits4::Terms| {
                    !(t.lo.is_finite()
                        && t.step.is_finite()
                        && t.step >= 0.0
                        && (0.0..=1.0001).contains(&t.err)
                        && t.cnorm.is_finite()
                        && t.cnorm >= 0.0)
                };
                if let Some(r) = terms.iter().position(bad) {
                    return Err(Error::corrupted(
                        &self.path,
                        format!("row {r} has bit4 terms {:?} out of range", terms[r]),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Per-row correction terms and the codes as u64 words (`code_words(dim)` per row),
    /// only for `Dtype::Bit1`.
    pub fn bit1_rows(&self) -> Result<(&[bits::Correction], &[u64])> {
        self.expect(Dtype::Bit1)?;
        let corr: &[f32] = cast(
            &self.map,
            HEADER_LEN as u64,
            self.count as u64 * 2,
            &self.path,
        )?;
        let words = bits::code_words(self.dim);
        let codes = cast(
            &self.map,
            self.rows_at,
            (self.count * words) as u64,
            &self.path,
        )?;
        Ok((bytemuck::cast_slice(corr), codes))
    }

    /// Per-row terms and the packed 4-bit codes (`code_bytes(dim)` per row), only for
    /// `Dtype::Bit4`.
    pub fn bit4_rows(&self) -> Result<(&[bits4::Terms], &[u8])> {
        self.expect(Dtype::Bit4)?;
        let terms: &[f32] = cast(
            &self.map,
            HEADER_LEN as u64,
            self.count as u64 * 4,
            &self.path,
        )?;
        let codes = cast(
            &self.map,
            self.rows_at,
            (self.count * bits4::code_bytes(self.dim)) as u64,
            &self.path,
        )?;
        Ok((bytemuck::cast_slice(terms), codes))
    }

    /// All f16 rows as raw bits (only for `Dtype::F16`).
    pub fn f16_rows(&self) -> Result<&[u16]> {
        self.expect(Dtype::F16)?;
        cast(
            &self.map,
            self.rows_at,
            (self.count * self.dim) as u64,
            &self.path,
        )
    }

    /// Per-row scales and int8 codes (only for `Dtype::Int8`).
    pub fn int8_rows(&self) -> Result<(&[f32], &[i8])> {
        self.expect(Dtype::Int8)?;
        let scales = cast(&self.map, HEADER_LEN as u64, self.count as u64, &self.path)?;
        let codes = cast(
            &self.map,
            self.rows_at,
            (self.count * self.dim) as u64,
            &self.path,
        )?;
        Ok((scales, codes))
    }

    fn expect(&self, dtype: Dtype) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::corrupted(
                &self.path,
                format!("holds {:?} rows, expected {:?}", self.dtype, dtype),
            ));
        }
        Ok(())
    }
}

/// Writes f32 rows (the concatenation of `parts`) as a vector file.
pub fn write_vectors(path: &Path, dim: usize, parts: &[&[f32]]) -> Result<FileEntry> {
    let count: usize = parts.iter().map(|p| p.len() / dim).sum();
    let chunks = parts
        .iter()
        .flat_map(|p| p.chunks(1 << 16))
        .map(|c| Ok(Cow::Borrowed(c)));
    write_vectors_streamed(path, dim, count, chunks)
}

/// Writes an f32 vector file of `count` rows whose values arrive in `chunks` (any
/// split; together exactly `count * dim` floats), so a caller can transform rows on
/// the way without holding them all. A chunk's error aborts the write.
pub fn write_vectors_streamed<'a>(
    path: &Path,
    dim: usize,
    count: usize,
    chunks: impl Iterator<Item = Result<Cow<'a, [f32]>>>,
) -> Result<FileEntry> {
    let mut w = CrcWriter::create(path)?;
    w.write(&VectorHeader::new(Dtype::F32, count as u64, dim as u64).to_bytes())?;
    w.pad_to(VECTOR_ROWS_ALIGN)?;
    let mut written = 0usize;
    for chunk in chunks {
        let chunk = chunk?;
        written += chunk.len();
        w.write(bytemuck::cast_slice(&chunk))?;
    }
    if written != count * dim {
        return Err(Error::corrupted(
            path,
            format!(
                "wrote {written} values for {count} rows of {dim} (internal error: row count changed)"
            ),
        ));
    }
    w.finish()
}

/// Writes the compact copy (`dtype` F16, Int8 or Bit1) of the concatenation of `parts`.
pub fn write_compact(path: &Path, dim: usize, parts: &[&[f32]], dtype: Dtype) -> Result<FileEntry> {
    if dtype == Dtype::F32 {
        return write_vectors(path, dim, parts);
    }
    let count: usize = parts.iter().map(|p| p.len() / dim).sum();
    let rows = || parts.iter().flat_map(|p| p.chunks_exact(dim));
    let mut w = CrcWriter::create(path)?;
    if dtype == Dtype::Bit1 {
        return write_bit1(w, dim, count, rows, bits::DEFAULT_SEED);
    }
    if dtype == Dtype::Bit4 {
        return write_bit4(w, dim, count, rows, bits::DEFAULT_SEED);
    }
    w.write(&VectorHeader::new(dtype, count as u64, dim as u64).to_bytes())?;
    let mut buf16: Vec<u16> = Vec::with_capacity(dim);
    let mut buf8: Vec<i8> = Vec::with_capacity(dim);
    if dtype == Dtype::Int8 {
        let scales: Vec<f32> = rows().map(int8_scale).collect();
        w.write(bytemuck::cast_slice(&scales))?;
        w.pad_to(VECTOR_ROWS_ALIGN)?;
        for (row, &scale) in rows().zip(&scales) {
            buf8.clear();
            buf8.extend(row.iter().map(|&x| quantize(x, scale)));
            w.write(bytemuck::cast_slice(&buf8))?;
        }
    } else {
        w.pad_to(VECTOR_ROWS_ALIGN)?;
        for row in rows() {
            buf16.clear();
            buf16.extend(row.iter().map(|&x| half::f16::from_f32(x).to_bits()));
            w.write(bytemuck::cast_slice(&buf16))?;
        }
    }
    w.finish()
}

/// The bit1 layout: header (seed in field `c`), `count` corrections, zero padding to
/// the row alignment, `count` codes. Rows are encoded in parallel; the codes are held
/// until the corrections are written (1/32 of the f32 rows' size).
fn write_bit1<'a, I>(
    mut w: CrcWriter,
    dim: usize,
    count: usize,
    rows: impl Fn() -> I,
    seed: u64,
) -> Result<FileEntry>
where
    I: Iterator<Item = &'a [f32]>,
{
    use rayon::prelude::*;
    let mut h = VectorHeader::new(Dtype::Bit1, count as u64, dim as u64);
    h.seed = seed;
    w.write(&h.to_bytes())?;
    let rot = bits::Rotation::new(dim, seed);
    let words = bits::code_words(dim);
    let rows: Vec<&[f32]> = rows().collect();
    let mut codes = vec![0u64; count * words];
    let corr: Vec<bits::Correction> = rows
        .par_iter()
        .zip(codes.par_chunks_mut(words))
        .map_init(Vec::new, |scratch, (row, code)| {
            bits::encode_row(&rot, row, code, scratch)
        })
        .collect();
    w.write(bytemuck::cast_slice(&corr))?;
    w.pad_to(VECTOR_ROWS_ALIGN)?;
    w.write(bytemuck::cast_slice(&codes))?;
    w.finish()
}

/// The bit4 layout: header (seed in field `c`), `count` terms, zero padding to the row
/// alignment, `count` packed codes.
fn write_bit4<'a, I>(
    mut w: CrcWriter,
    dim: usize,
    count: usize,
    rows: impl Fn() -> I,
    seed: u64,
) -> Result<FileEntry>
where
    I: Iterator<Item = &'a [f32]>,
{
    use rayon::prelude::*;
    let mut h = VectorHeader::new(Dtype::Bit4, count as u64, dim as u64);
    h.seed = seed;
    w.write(&h.to_bytes())?;
    let rot = bits::Rotation::new(dim, seed);
    let bytes = bits4::code_bytes(dim);
    let rows: Vec<&[f32]> = rows().collect();
    let mut codes = vec![0u8; count * bytes];
    let terms: Vec<bits4::Terms> = rows
        .par_iter()
        .zip(codes.par_chunks_mut(bytes))
        .map_init(Vec::new, |scratch, (row, code)| {
            bits4::encode_row(&rot, row, code, scratch)
        })
        .collect();
    w.write(bytemuck::cast_slice(&terms))?;
    w.pad_to(VECTOR_ROWS_ALIGN)?;
    w.write(&codes)?;
    w.finish()
}

/// Per-row int8 scale: the largest magnitude maps to 127.
pub fn int8_scale(row: &[f32]) -> f32 {
    let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max > 0.0 {
        max / 127.0
    } else {
        1.0
    }
}

pub fn quantize(x: f32, scale: f32) -> i8 {
    (x / scale).round().clamp(-127.0, 127.0) as i8
}

/// External string ids of the rows, with a sorted permutation for lookups.
pub struct IdTable {
    path: PathBuf,
    map: Mmap,
    count: usize,
    sorted_at: u64,
    blob_at: u64,
    blob_len: u64,
}

impl IdTable {
    /// Opens the table and checks its offsets and UTF-8 (one pass over the offsets and
    /// the id bytes: a few hundred microseconds per 100k ids).
    pub fn open(path: &Path) -> Result<IdTable> {
        let map = map_file(path)?;
        let h = IdsHeader::parse(&map, path)?;
        let (count, blob_len) = (h.count, h.id_bytes);
        if count > u32::MAX as u64 {
            return Err(Error::corrupted(
                path,
                format!("{count} ids exceed the u32 row limit"),
            ));
        }
        let offsets_at = HEADER_LEN as u64;
        let sorted_at = add(offsets_at, mul(count + 1, 8, path)?, path)?;
        let blob_at = align_up(add(sorted_at, mul(count, 4, path)?, path)?, 8);
        check_len(
            map.len(),
            add(blob_at, blob_len, path)?,
            path,
            "the id table",
        )?;
        let table = IdTable {
            path: path.to_path_buf(),
            map,
            count: count as usize,
            sorted_at,
            blob_at,
            blob_len,
        };
        let offsets = table.offsets();
        let blob = table.blob();
        let text = std::str::from_utf8(blob)
            .map_err(|e| Error::corrupted(path, format!("ids are not UTF-8: {e}")))?;
        if offsets.first() != Some(&0) || offsets.last() != Some(&blob_len) {
            return Err(Error::corrupted(
                path,
                "id offsets do not span the id bytes",
            ));
        }
        for (row, w) in offsets.windows(2).enumerate() {
            if w[0] > w[1] || !text.is_char_boundary(w[1] as usize) {
                return Err(Error::corrupted(
                    path,
                    format!("id offset of row {row} is invalid"),
                ));
            }
        }
        Ok(table)
    }

    fn offsets(&self) -> &[u64] {
        cast(
            &self.map,
            HEADER_LEN as u64,
            self.count as u64 + 1,
            &self.path,
        )
        .expect("checked on open")
    }

    fn sorted(&self) -> &[u32] {
        cast(&self.map, self.sorted_at, self.count as u64, &self.path).expect("checked on open")
    }

    fn blob(&self) -> &[u8] {
        &self.map[self.blob_at as usize..(self.blob_at + self.blob_len) as usize]
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Id of a row; `None` past the end.
    pub fn get(&self, row: usize) -> Option<&str> {
        let offsets = self.offsets();
        let (s, e) = (*offsets.get(row)? as usize, *offsets.get(row + 1)? as usize);
        // Validated on open: offsets are monotone char boundaries inside the blob.
        std::str::from_utf8(&self.blob()[s..e]).ok()
    }

    /// Row of an id by binary search over the sorted permutation.
    pub fn find(&self, id: &str) -> Option<usize> {
        let sorted = self.sorted();
        let (mut lo, mut hi) = (0usize, sorted.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let row = sorted[mid] as usize;
            let probe = self.get(row)?;
            match probe.cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(row),
            }
        }
        None
    }

    /// What `index verify` adds to the checks of [`IdTable::open`]: ids are non-empty
    /// and the sorted table is a permutation of the rows in strictly increasing byte
    /// order of their ids (so ids are unique and [`IdTable::find`] is right).
    pub fn check(&self) -> Result<()> {
        let offsets = self.offsets();
        if let Some(row) = offsets.windows(2).position(|w| w[0] == w[1]) {
            return Err(Error::corrupted(
                &self.path,
                format!("the id of row {row} is empty"),
            ));
        }
        let sorted = self.sorted();
        let mut seen = vec![false; self.count];
        let mut prev: Option<&[u8]> = None;
        for (i, &row) in sorted.iter().enumerate() {
            let row = row as usize;
            if row >= self.count || std::mem::replace(&mut seen[row], true) {
                return Err(Error::corrupted(
                    &self.path,
                    format!("sorted-row table entry {i} ({row}) is out of range or repeated"),
                ));
            }
            let id = &self.blob()[offsets[row] as usize..offsets[row + 1] as usize];
            if prev.is_some_and(|p| p >= id) {
                return Err(Error::corrupted(
                    &self.path,
                    format!("sorted-row table is out of order (or an id repeats) at entry {i}"),
                ));
            }
            prev = Some(id);
        }
        Ok(())
    }
}

/// Writes an id table. Ids must be unique (checked by the caller).
pub fn write_ids(path: &Path, ids: &[String]) -> Result<FileEntry> {
    let mut offsets = Vec::with_capacity(ids.len() + 1);
    let mut pos = 0u64;
    offsets.push(0u64);
    for id in ids {
        pos += id.len() as u64;
        offsets.push(pos);
    }
    let mut sorted: Vec<u32> = (0..ids.len() as u32).collect();
    sorted.sort_unstable_by(|&a, &b| ids[a as usize].cmp(&ids[b as usize]));
    let mut w = CrcWriter::create(path)?;
    w.write(
        &IdsHeader {
            count: ids.len() as u64,
            id_bytes: pos,
        }
        .to_bytes(),
    )?;
    w.write(bytemuck::cast_slice(&offsets))?;
    w.write(bytemuck::cast_slice(&sorted))?;
    w.pad_to(8)?;
    for id in ids {
        w.write(id.as_bytes())?;
    }
    w.finish()
}

/// Per item, per label attribute, a value id (`NO_LABEL` when absent).
pub struct LabelTable {
    path: PathBuf,
    map: Mmap,
    pub count: usize,
    pub attributes: usize,
}

impl LabelTable {
    pub fn open(path: &Path) -> Result<LabelTable> {
        let map = map_file(path)?;
        let h = LabelsHeader::parse(&map, path)?;
        let cells = mul(h.count, h.attributes as u64, path)?;
        check_len(
            map.len(),
            add(HEADER_LEN as u64, mul(cells, 2, path)?, path)?,
            path,
            "the labels",
        )?;
        Ok(LabelTable {
            path: path.to_path_buf(),
            map,
            count: h.count as usize,
            attributes: h.attributes as usize,
        })
    }

    fn values(&self) -> &[u16] {
        cast(
            &self.map,
            HEADER_LEN as u64,
            (self.count * self.attributes) as u64,
            &self.path,
        )
        .expect("checked on open")
    }

    /// Label of `row` for label attribute `attribute`; `None` when absent or out of range.
    pub fn get(&self, row: usize, attribute: usize) -> Option<ValueId> {
        if attribute >= self.attributes {
            return None;
        }
        let v = *self.values().get(row * self.attributes + attribute)?;
        (v != NO_LABEL).then_some(v)
    }
}

pub fn write_labels(path: &Path, attributes: usize, values: &[u16]) -> Result<FileEntry> {
    let count = values.len().checked_div(attributes).unwrap_or(0);
    let mut w = CrcWriter::create(path)?;
    w.write(
        &LabelsHeader {
            attributes: attributes as u32,
            count: count as u64,
        }
        .to_bytes(),
    )?;
    w.write(bytemuck::cast_slice(values))?;
    w.finish()
}

/// A bitset of removed rows.
pub struct Tombstones {
    path: PathBuf,
    map: Mmap,
    pub count: usize,
    pub removed: usize,
}

impl Tombstones {
    pub fn open(path: &Path) -> Result<Tombstones> {
        let map = map_file(path)?;
        let h = TombstonesHeader::parse(&map, path)?;
        let words = h.count.div_ceil(64);
        check_len(
            map.len(),
            add(HEADER_LEN as u64, mul(words, 8, path)?, path)?,
            path,
            "the tombstones",
        )?;
        if h.removed > h.count {
            return Err(Error::corrupted(path, "more removed rows than rows"));
        }
        Ok(Tombstones {
            path: path.to_path_buf(),
            map,
            count: h.count as usize,
            removed: h.removed as usize,
        })
    }

    pub fn words(&self) -> &[u64] {
        cast(
            &self.map,
            HEADER_LEN as u64,
            self.count.div_ceil(64) as u64,
            &self.path,
        )
        .expect("checked on open")
    }

    /// What `index verify` adds to [`Tombstones::open`]: no bit is set past the last row
    /// and the set bits number exactly the header's removed count.
    pub fn check(&self) -> Result<()> {
        let words = self.words();
        if !self.count.is_multiple_of(64) {
            if let Some(&last) = words.last() {
                if last >> (self.count % 64) != 0 {
                    return Err(Error::corrupted(
                        &self.path,
                        "a bit is set past the last row",
                    ));
                }
            }
        }
        let set: usize = words.iter().map(|w| w.count_ones() as usize).sum();
        if set != self.removed {
            return Err(Error::corrupted(
                &self.path,
                format!(
                    "{set} bits are set, the header counts {} removed rows",
                    self.removed
                ),
            ));
        }
        Ok(())
    }

    pub fn is_removed(&self, row: usize) -> bool {
        self.words()
            .get(row / 64)
            .is_some_and(|w| w >> (row % 64) & 1 == 1)
    }
}

pub fn write_tombstones(path: &Path, count: usize, words: &[u64]) -> Result<FileEntry> {
    let removed: u64 = words.iter().map(|w| w.count_ones() as u64).sum();
    let mut w = CrcWriter::create(path)?;
    w.write(
        &TombstonesHeader {
            count: count as u64,
            removed,
        }
        .to_bytes(),
    )?;
    w.write(bytemuck::cast_slice(words))?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector file in the version-1 layout: rows (or int8 scales) right after the
    /// header, int8 codes at the next multiple of 64.
    fn v1_file(dtype: Dtype, count: usize, dim: usize, body: &[u8]) -> Vec<u8> {
        let mut h = VectorHeader::new(dtype, count as u64, dim as u64);
        h.version = 1;
        let mut bytes = h.to_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn version_1_and_2_vector_files_read_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (count, dim) = (3, 5);
        let rows: Vec<f32> = (0..count * dim).map(|i| i as f32 * 0.25 - 1.0).collect();

        let v2 = dir.path().join("v2.vec");
        write_vectors(&v2, dim, &[&rows]).unwrap();
        let file = VectorFile::open(&v2).unwrap();
        assert_eq!(file.rows_at, VECTOR_ROWS_ALIGN);
        assert_eq!(file.f32_rows().unwrap(), &rows[..]);

        let v1 = dir.path().join("v1.vec");
        std::fs::write(
            &v1,
            v1_file(Dtype::F32, count, dim, bytemuck::cast_slice(&rows)),
        )
        .unwrap();
        let file = VectorFile::open(&v1).unwrap();
        assert_eq!(file.rows_at, HEADER_LEN as u64);
        assert_eq!(file.f32_rows().unwrap(), &rows[..]);
        assert_eq!(file.f32_rows_bulk().unwrap(), &rows[..]);

        // int8: both layouts give the same scales and codes.
        let c2 = dir.path().join("v2.int8");
        write_compact(&c2, dim, &[&rows], Dtype::Int8).unwrap();
        let file = VectorFile::open(&c2).unwrap();
        assert_eq!(file.rows_at % VECTOR_ROWS_ALIGN, 0);
        let (scales, codes) = file.int8_rows().unwrap();
        let mut body = bytemuck::cast_slice::<f32, u8>(scales).to_vec();
        body.resize(
            align_up(HEADER_LEN as u64 + body.len() as u64, 64) as usize - HEADER_LEN,
            0,
        );
        body.extend_from_slice(bytemuck::cast_slice(codes));
        let c1 = dir.path().join("v1.int8");
        std::fs::write(&c1, v1_file(Dtype::Int8, count, dim, &body)).unwrap();
        let old = VectorFile::open(&c1).unwrap();
        assert_eq!(old.int8_rows().unwrap(), (scales, codes));

        // A version-1 length with a version-2 header is refused (length check).
        let mut bytes = std::fs::read(&v1).unwrap();
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let bad = dir.path().join("mixed.vec");
        std::fs::write(&bad, bytes).unwrap();
        assert!(matches!(
            VectorFile::open(&bad),
            Err(Error::Corrupted { .. })
        ));
    }
}

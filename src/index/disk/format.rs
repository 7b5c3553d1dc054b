//! Binary files of an index: 64-byte little-endian headers, validation on open, writers
//! that compute the crc32 while writing. The byte layout is specified in `index-format.md`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, IoContext, Result};

/// Version of every binary file and of the manifest written by this build. Version 2
/// page-aligns the rows of vector files; version 1 files (rows right after the header)
/// are still read.
pub const INDEX_FORMAT_VERSION: u32 = 2;
/// Oldest version this build reads.
pub const INDEX_FORMAT_OLDEST_SUPPORTED_VERSION: u32 = 1;
/// Size of the fixed header at the start of every binary file.
pub const HEADER_LEN: usize = 64;
/// Alignment of the rows of a version-2 vector file: a 4 KiB f32 row (1024-d) is one
/// page, so re-scoring a row faults in one page, not two.
pub const VECTOR_ROWS_ALIGN: u64 = 4096;

/// Alignment of the row section of a vector file of `version`.
pub fn vector_rows_align(version: u32) -> u64 {
    if version >= 2 {
        VECTOR_ROWS_ALIGN
    } else {
        64
    }
}

pub const MAGIC_VECTORS: [u8; 8] = *b"TAILRVEC";
pub const MAGIC_GRAPH: [u8; 8] = *b"TAILRGRF";
pub const MAGIC_IDS: [u8; 8] = *b"TAILRIDS";
pub const MAGIC_LABELS: [u8; 8] = *b"TAILRLBL";
pub const MAGIC_TOMBSTONES: [u8; 8] = *b"TAILRTMB";

/// Element type of a vector file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32 = 0,
    F16 = 1,
    /// int8 codes with one f32 scale per row.
    Int8 = 2,
    /// 1-bit codes of the rotated rows with two f32 correction terms per row.
    Bit1 = 3,
    /// 4-bit codes of the rotated rows with four f32 terms per row.
    Bit4 = 4,
}

/// Maps a whole file read-only (through [`crate::fsio`], the crate's one map).
pub fn map_file(path: &Path) -> Result<Mmap> {
    crate::fsio::map_path(path)
}

/// Maps the whole of an open file read-only (`path` names it in errors).
pub fn map_open_file(file: &File, path: &Path) -> Result<Mmap> {
    crate::fsio::map_readonly(file, path)
}

/// The common 64-byte header, fields as index-format.md names them (`a`..`d` mean
/// something different per file kind). Only the typed views below use it, so no caller
/// reads `b` where it meant a dimension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub a: u32,
    pub count: u64,
    pub b: u64,
    pub c: u64,
    pub d: u64,
}

impl RawHeader {
    pub fn new(magic: [u8; 8], a: u32, count: u64, b: u64, c: u64, d: u64) -> RawHeader {
        RawHeader {
            magic,
            version: INDEX_FORMAT_VERSION,
            a,
            count,
            b,
            c,
            d,
        }
    }

    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&self.magic);
        h[8..12].copy_from_slice(&self.version.to_le_bytes());
        h[12..16].copy_from_slice(&self.a.to_le_bytes());
        h[16..24].copy_from_slice(&self.count.to_le_bytes());
        h[24..32].copy_from_slice(&self.b.to_le_bytes());
        h[32..40].copy_from_slice(&self.c.to_le_bytes());
        h[40..48].copy_from_slice(&self.d.to_le_bytes());
        h
    }

    /// Parses and checks magic and version; names `path` in every error.
    pub fn parse(bytes: &[u8], magic: [u8; 8], path: &Path) -> Result<RawHeader> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::corrupted(
                path,
                format!(
                    "file is {} bytes, shorter than the {HEADER_LEN}-byte header",
                    bytes.len()
                ),
            ));
        }
        if bytes[0..8] != magic {
            return Err(Error::corrupted(
                path,
                format!(
                    "bad magic {:?}, expected {:?}",
                    String::from_utf8_lossy(&bytes[0..8]),
                    String::from_utf8_lossy(&magic)
                ),
            ));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        check_version(version, path)?;
        if bytes[48..64].iter().any(|&b| b != 0) {
            return Err(Error::corrupted(
                path,
                "reserved header bytes 48..64 are not zero",
            ));
        }
        Ok(RawHeader {
            magic,
            version,
            a: u32_at(12),
            count: u64_at(16),
            b: u64_at(24),
            c: u64_at(32),
            d: u64_at(40),
        })
    }
}

/// Header of a vector file (`TAILRVEC`): element type, rows, dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorHeader {
    pub version: u32,
    pub dtype: Dtype,
    pub count: u64,
    pub dim: u64,
    /// Header field `c`: the rotation seed of a `Bit1` file (0 for the other types).
    pub seed: u64,
}

impl VectorHeader {
    pub fn new(dtype: Dtype, count: u64, dim: u64) -> VectorHeader {
        VectorHeader {
            version: INDEX_FORMAT_VERSION,
            dtype,
            count,
            dim,
            seed: 0,
        }
    }
    pub fn parse(bytes: &[u8], path: &Path) -> Result<VectorHeader> {
        let h = RawHeader::parse(bytes, MAGIC_VECTORS, path)?;
        let dtype = match h.a {
            0 => Dtype::F32,
            1 => Dtype::F16,
            2 => Dtype::Int8,
            3 => Dtype::Bit1,
            4 => Dtype::Bit4,
            code => {
                return Err(Error::corrupted(
                    path,
                    format!("unknown element type {code}"),
                ))
            }
        };
        Ok(VectorHeader {
            version: h.version,
            dtype,
            count: h.count,
            dim: h.b,
            seed: h.c,
        })
    }
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut h = RawHeader::new(
            MAGIC_VECTORS,
            self.dtype as u32,
            self.count,
            self.dim,
            self.seed,
            0,
        );
        h.version = self.version;
        h.to_bytes()
    }
}

/// Header of a graph file (`TAILRGRF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphHeader {
    /// Maximum neighbours on level 0.
    pub m0: u64,
    pub count: u64,
    /// Maximum neighbours on the upper levels.
    pub m: u64,
    /// Entry node, `u64::MAX` for an empty graph.
    pub entry: u64,
    /// Number of upper-level blocks.
    pub upper_blocks: u64,
}

impl GraphHeader {
    pub fn parse(bytes: &[u8], path: &Path) -> Result<GraphHeader> {
        let h = RawHeader::parse(bytes, MAGIC_GRAPH, path)?;
        Ok(GraphHeader {
            m0: h.a as u64,
            count: h.count,
            m: h.b,
            entry: h.c,
            upper_blocks: h.d,
        })
    }
    /// `m0` must fit in u32 (checked by the caller: degrees are at most 4096).
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        RawHeader::new(
            MAGIC_GRAPH,
            self.m0 as u32,
            self.count,
            self.m,
            self.entry,
            self.upper_blocks,
        )
        .to_bytes()
    }
}

/// Header of an item table (`TAILRIDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdsHeader {
    pub count: u64,
    /// Total bytes of the id strings.
    pub id_bytes: u64,
}

impl IdsHeader {
    pub fn parse(bytes: &[u8], path: &Path) -> Result<IdsHeader> {
        let h = RawHeader::parse(bytes, MAGIC_IDS, path)?;
        Ok(IdsHeader {
            count: h.count,
            id_bytes: h.b,
        })
    }
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        RawHeader::new(MAGIC_IDS, 0, self.count, self.id_bytes, 0, 0).to_bytes()
    }
}

/// Header of a label table (`TAILRLBL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelsHeader {
    pub attributes: u32,
    pub count: u64,
}

impl LabelsHeader {
    pub fn parse(bytes: &[u8], path: &Path) -> Result<LabelsHeader> {
        let h = RawHeader::parse(bytes, MAGIC_LABELS, path)?;
        Ok(LabelsHeader {
            attributes: h.a,
            count: h.count,
        })
    }
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        RawHeader::new(MAGIC_LABELS, self.attributes, self.count, 0, 0, 0).to_bytes()
    }
}

/// Header of a tombstone file (`TAILRTMB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TombstonesHeader {
    pub count: u64,
    /// Set bits (removed rows).
    pub removed: u64,
}

impl TombstonesHeader {
    pub fn parse(bytes: &[u8], path: &Path) -> Result<TombstonesHeader> {
        let h = RawHeader::parse(bytes, MAGIC_TOMBSTONES, path)?;
        Ok(TombstonesHeader {
            count: h.count,
            removed: h.b,
        })
    }
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        RawHeader::new(MAGIC_TOMBSTONES, 0, self.count, self.removed, 0, 0).to_bytes()
    }
}

/// Refuses versions outside `OLDEST..=CURRENT` with a hint.
pub fn check_version(version: u32, path: &Path) -> Result<()> {
    if !(INDEX_FORMAT_OLDEST_SUPPORTED_VERSION..=INDEX_FORMAT_VERSION).contains(&version) {
        return Err(Error::IncompatibleVersion {
            path: path.to_path_buf(),
            found: version,
            supported: format!("{INDEX_FORMAT_OLDEST_SUPPORTED_VERSION}..={INDEX_FORMAT_VERSION}"),
            hint: "rebuild the index with `tailor index build`".into(),
        });
    }
    Ok(())
}

/// `a * b` or a corruption error (sizes read from files must not overflow).
pub fn mul(a: u64, b: u64, path: &Path) -> Result<u64> {
    a.checked_mul(b)
        .ok_or_else(|| Error::corrupted(path, "header sizes overflow"))
}

pub fn add(a: u64, b: u64, path: &Path) -> Result<u64> {
    a.checked_add(b)
        .ok_or_else(|| Error::corrupted(path, "header sizes overflow"))
}

/// `x` rounded up to a multiple of `to`; saturates (a length check then fails) instead
/// of overflowing on sizes read from corrupted headers.
pub fn align_up(x: u64, to: u64) -> u64 {
    x.checked_next_multiple_of(to).unwrap_or(u64::MAX)
}

/// Checks that a file is exactly `expected` bytes long.
pub fn check_len(actual: usize, expected: u64, path: &Path, what: &str) -> Result<()> {
    if actual as u64 != expected {
        let kind = if (actual as u64) < expected {
            "truncated"
        } else {
            "has trailing bytes"
        };
        return Err(Error::corrupted(
            path,
            format!("{kind}: {what} needs {expected} bytes, the file has {actual}"),
        ));
    }
    Ok(())
}

/// Casts a byte range of a map to a typed slice, checking bounds and alignment.
pub fn cast<'a, T: bytemuck::Pod>(
    bytes: &'a [u8],
    offset: u64,
    len_elems: u64,
    path: &Path,
) -> Result<&'a [T]> {
    let size = std::mem::size_of::<T>() as u64;
    let end = add(offset, mul(len_elems, size, path)?, path)?;
    if end > bytes.len() as u64 {
        return Err(Error::corrupted(
            path,
            format!(
                "section {offset}..{end} runs past the end ({} bytes)",
                bytes.len()
            ),
        ));
    }
    bytemuck::try_cast_slice(&bytes[offset as usize..end as usize])
        .map_err(|e| Error::corrupted(path, format!("section at {offset}: {e}")))
}

/// A buffered file writer that counts bytes and computes the crc32 as it goes.
pub struct CrcWriter {
    path: PathBuf,
    inner: BufWriter<File>,
    hasher: crc32fast::Hasher,
    len: u64,
}

/// Name, length and crc32 of a written file, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub len: u64,
    pub crc32: u32,
}

impl CrcWriter {
    pub fn create(path: &Path) -> Result<CrcWriter> {
        let file = File::create(path).at(path)?;
        Ok(CrcWriter {
            path: path.to_path_buf(),
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        crate::failpoint!("index::write")?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        self.inner.write_all(bytes).at(&self.path)
    }

    pub fn pad_to(&mut self, align: u64) -> Result<()> {
        let pad = align_up(self.len, align) - self.len;
        self.write(&vec![0u8; pad as usize])
    }

    /// Flushes and fsyncs; returns the manifest entry.
    pub fn finish(self) -> Result<FileEntry> {
        let path = self.path;
        let file = self
            .inner
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        file.sync_all().at(&path)?;
        Ok(FileEntry {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            len: self.len,
            crc32: self.hasher.finalize(),
        })
    }
}

/// crc32 of a whole byte slice.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_errors() {
        let p = Path::new("x.vec");
        let h = RawHeader::new(MAGIC_VECTORS, 2, 10, 3, 4, 5);
        let bytes = h.to_bytes();
        let back = RawHeader::parse(&bytes, MAGIC_VECTORS, p).unwrap();
        assert_eq!(
            (back.a, back.count, back.b, back.c, back.d),
            (2, 10, 3, 4, 5)
        );
        assert!(matches!(
            RawHeader::parse(&bytes, MAGIC_GRAPH, p),
            Err(Error::Corrupted { .. })
        ));
        assert!(matches!(
            RawHeader::parse(&bytes[..63], MAGIC_VECTORS, p),
            Err(Error::Corrupted { .. })
        ));
        let mut future = bytes;
        future[8..12].copy_from_slice(&(INDEX_FORMAT_VERSION + 1).to_le_bytes());
        assert!(matches!(
            RawHeader::parse(&future, MAGIC_VECTORS, p),
            Err(Error::IncompatibleVersion { found, .. }) if found == INDEX_FORMAT_VERSION + 1
        ));
        let mut zero = bytes;
        zero[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            RawHeader::parse(&zero, MAGIC_VECTORS, p),
            Err(Error::IncompatibleVersion { found: 0, .. })
        ));
    }

    #[test]
    fn typed_views_round_trip_and_refuse_other_kinds() {
        let p = Path::new("f");
        let v = VectorHeader::new(Dtype::Int8, 7, 1024);
        assert_eq!(VectorHeader::parse(&v.to_bytes(), p).unwrap(), v);
        let g = GraphHeader {
            m0: 32,
            count: 7,
            m: 16,
            entry: 3,
            upper_blocks: 2,
        };
        assert_eq!(GraphHeader::parse(&g.to_bytes(), p).unwrap(), g);
        let i = IdsHeader {
            count: 7,
            id_bytes: 70,
        };
        assert_eq!(IdsHeader::parse(&i.to_bytes(), p).unwrap(), i);
        let l = LabelsHeader {
            attributes: 2,
            count: 7,
        };
        assert_eq!(LabelsHeader::parse(&l.to_bytes(), p).unwrap(), l);
        let t = TombstonesHeader {
            count: 7,
            removed: 1,
        };
        assert_eq!(TombstonesHeader::parse(&t.to_bytes(), p).unwrap(), t);
        // The same bytes as the generic layout of index-format.md.
        assert_eq!(
            g.to_bytes(),
            RawHeader::new(MAGIC_GRAPH, 32, 7, 16, 3, 2).to_bytes()
        );
        assert!(matches!(
            GraphHeader::parse(&v.to_bytes(), p),
            Err(Error::Corrupted { .. })
        ));
        let mut bad = v.to_bytes();
        bad[12] = 9;
        assert!(
            matches!(VectorHeader::parse(&bad, p), Err(Error::Corrupted { reason, .. }) if reason.contains("element type 9"))
        );
    }

    #[test]
    fn version_check_is_exhaustive_over_small_values() {
        for v in 0..10u32 {
            let ok = check_version(v, Path::new("f")).is_ok();
            assert_eq!(
                ok,
                (INDEX_FORMAT_OLDEST_SUPPORTED_VERSION..=INDEX_FORMAT_VERSION).contains(&v)
            );
        }
    }

    #[test]
    fn cast_checks_bounds_and_alignment() {
        let buf = vec![0u64; 4];
        let bytes: &[u8] = bytemuck::cast_slice(&buf);
        let p = Path::new("f");
        assert_eq!(cast::<f32>(bytes, 0, 8, p).unwrap().len(), 8);
        assert!(cast::<f32>(bytes, 0, 9, p).is_err());
        assert!(cast::<f32>(bytes, 2, 1, p).is_err());
        assert!(cast::<f32>(bytes, u64::MAX - 1, 1, p).is_err());
        assert!(cast::<u32>(bytes, 0, u64::MAX, p).is_err());
    }
}

//! Minimal reader and writer for NumPy `.npy` files holding a 2-D little-endian float32
//! matrix (`<f4`, C order), the exchange format for vectors (`index build`, `index export`).

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// A row-major f32 matrix read from or written to a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(rows * cols, data.len(), "matrix shape does not match data");
        Matrix { rows, cols, data }
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// Reads a 2-D float32 `.npy` file. A 1-D array is read as one row.
pub fn read_f32_matrix(path: &Path) -> Result<Matrix> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .at(path)?;
    parse_f32_matrix(&bytes).map_err(|reason| Error::invalid(path, reason))
}

fn parse_f32_matrix(bytes: &[u8]) -> std::result::Result<Matrix, String> {
    let (rows, cols, data_start) = parse_header(bytes)?;
    let data = le_f32s(&bytes[data_start..]);
    Ok(Matrix { rows, cols, data })
}

/// Little-endian float32 bytes as values.
fn le_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A float32 `.npy` matrix mapped rather than read, for inputs too large to copy
/// (`index build`). Falls back to reading when the data cannot be viewed in place:
/// a big-endian host, or data not 4-byte aligned (numpy pads its header to 64 bytes,
/// so that is only seen from other writers).
pub struct MappedMatrix {
    pub rows: usize,
    pub cols: usize,
    data: MatrixData,
}

enum MatrixData {
    Mapped { map: memmap2::Mmap, start: usize },
    Read(Vec<f32>),
}

impl MappedMatrix {
    pub fn data(&self) -> &[f32] {
        match &self.data {
            MatrixData::Mapped { map, start } => bytemuck::cast_slice(&map[*start..]),
            MatrixData::Read(v) => v,
        }
    }
}

/// Maps a 2-D float32 `.npy` file (see [`MappedMatrix`]); the same checks as
/// [`read_f32_matrix`]. The file must not be truncated while the map is in use.
pub fn map_f32_matrix(path: &Path) -> Result<MappedMatrix> {
    // The map is read-only and lives inside the returned value; a file truncated by
    // another process meanwhile is outside what any reader can guard.
    let map = crate::fsio::map_path(path)?;
    let (rows, cols, start) = parse_header(&map).map_err(|reason| Error::invalid(path, reason))?;
    let in_place =
        cfg!(target_endian = "little") && (map.as_ptr() as usize + start).is_multiple_of(4);
    let data = if in_place {
        MatrixData::Mapped { map, start }
    } else {
        MatrixData::Read(le_f32s(&map[start..]))
    };
    Ok(MappedMatrix { rows, cols, data })
}

/// Checks a float32 `.npy` header and the data length; returns (rows, cols, offset of
/// the data).
fn parse_header(bytes: &[u8]) -> std::result::Result<(usize, usize, usize), String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!(".npy format version {v} is not supported")),
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| "the .npy header is not text")?;
    let descr = dict_value(header, "descr").ok_or("the .npy header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    if descr != "<f4" && descr != "float32" {
        return Err(format!(
            "expected float32 data ('<f4'), found dtype '{descr}'; convert with arr.astype(np.float32)"
        ));
    }
    if dict_value(header, "fortran_order").map(|v| v.trim()) == Some("True") {
        return Err(
            "Fortran-order arrays are not supported; save with np.ascontiguousarray".into(),
        );
    }
    let shape = dict_value(header, "shape").ok_or("the .npy header has no 'shape'")?;
    let dims: Vec<usize> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape {shape}")))
        .collect::<std::result::Result<_, _>>()?;
    let (rows, cols) = match dims.as_slice() {
        [n] => (1, *n),
        [r, c] => (*r, *c),
        _ => return Err(format!("expected a 2-D array, found shape {shape}")),
    };
    let expected = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .ok_or("shape overflows")?;
    let body = &bytes[data_start..];
    if body.len() != expected {
        return Err(format!(
            "data holds {} bytes, shape ({rows}, {cols}) needs {expected}",
            body.len()
        ));
    }
    Ok((rows, cols, data_start))
}

/// Value text of `'key': value` in a .npy header dict (value up to the next top-level comma).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[start + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

/// Writes a 2-D float32 `.npy` file (format version 1.0).
pub fn write_f32_matrix(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    assert_eq!(rows * cols, data.len(), "matrix shape does not match data");
    crate::fsio::atomic_write_with(path, |w| {
        write_f32_matrix_to(w, rows, cols, data.iter().copied()).at(path)
    })
}

/// Streams a 2-D float32 `.npy` to a writer; `values` must yield exactly rows*cols floats.
pub fn write_f32_matrix_to(
    w: &mut impl Write,
    rows: usize,
    cols: usize,
    values: impl Iterator<Item = f32>,
) -> std::io::Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Pad so that the data starts on a 64-byte boundary, ending the header with '\n'.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    w.write_all(MAGIC)?;
    w.write_all(&[1, 0])?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for v in values {
        w.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_f32_matrix(&p, 3, 4, &data).unwrap();
        let m = read_f32_matrix(&p).unwrap();
        assert_eq!((m.rows, m.cols), (3, 4));
        assert_eq!(m.data, data);
        let len = std::fs::metadata(&p).unwrap().len() as usize;
        assert_eq!((len - 48) % 64, 0, "data starts on a 64-byte boundary");
    }

    #[test]
    fn rejects_wrong_dtype_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        write_f32_matrix(&p, 2, 2, &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&p, &bytes).unwrap();
        let err = read_f32_matrix(&p).unwrap_err().to_string();
        assert!(err.contains("shape (2, 2) needs 16"), "{err}");
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
        bytes[at + 2] = b'8';
        std::fs::write(&p, &bytes).unwrap();
        let err = read_f32_matrix(&p).unwrap_err().to_string();
        assert!(err.contains("expected float32"), "{err}");
    }

    #[test]
    fn map_matches_read_and_checks_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
        write_f32_matrix(&p, 3, 4, &data).unwrap();
        let m = map_f32_matrix(&p).unwrap();
        assert_eq!((m.rows, m.cols, m.data()), (3, 4, &data[..]));
        // A header whose length puts the data off a 4-byte boundary: read, not mapped.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }\n";
        let mut odd = b"\x93NUMPY\x01\x00".to_vec();
        odd.extend((header.len() as u16).to_le_bytes());
        odd.extend(header.as_bytes());
        assert_ne!(odd.len() % 4, 0);
        odd.extend(data.iter().flat_map(|x| x.to_le_bytes()));
        let q = dir.path().join("odd.npy");
        std::fs::write(&q, &odd).unwrap();
        assert_eq!(map_f32_matrix(&q).unwrap().data(), &data[..]);
        // Truncated and empty files: errors naming the file, as for reading.
        std::fs::write(&q, &odd[..odd.len() - 1]).unwrap();
        let err = map_f32_matrix(&q).err().unwrap().to_string();
        assert!(err.contains("odd.npy") && err.contains("needs 48"), "{err}");
        std::fs::write(&q, b"").unwrap();
        let err = map_f32_matrix(&q).err().unwrap().to_string();
        assert!(
            err.contains("odd.npy") && err.contains("bad magic"),
            "{err}"
        );
    }
}

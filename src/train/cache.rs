//! The frozen-backbone feature cache: each training image's backbone map, computed once
//! for the image and its mirror, stored as f16 in a memory-mapped file; heads then train
//! from the cache without running (or back-propagating through) the backbone.
//!
//! File layout (little-endian):
//! ```text
//! 0   magic "TLRFEAT1"            8 bytes
//! 8   format version (u32) = 1
//! 12  channels, height, width (3 x u32)
//! 24  count: number of items (u64)
//! 32  key: fingerprint of the backbone weights, input size and item list (u64)
//! 40  zero padding to 64
//! 64  count item indices (u64)
//! ..  count x 2 maps (item-major, plain then mirrored), channels*height*width f16 each
//! ```
//! The file is written under a temporary name and renamed into place, never modified
//! after, so a mapping of it stays valid.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use half::f16;
use memmap2::Mmap;

use crate::error::{Error, IoContext, Result};
use crate::progress::{Progress, ProgressMode};

const MAGIC: &[u8; 8] = b"TLRFEAT1";
const VERSION: u32 = 1;
const HEADER: usize = 64;
const ABSENT: u32 = u32::MAX;

/// A read-only, memory-mapped feature cache.
pub struct FeatureCache {
    path: PathBuf,
    mmap: Mmap,
    /// Catalog item -> slot.
    slots: Vec<u32>,
    dims: [usize; 3],
    count: usize,
}

fn fingerprint(key: u64, items: &[usize]) -> u64 {
    let mut h = crc32fast::Hasher::new();
    h.update(&key.to_le_bytes());
    for &i in items {
        h.update(&(i as u64).to_le_bytes());
    }
    (key.rotate_left(32)) ^ h.finalize() as u64
}

/// What a cache holds: maps of `dims` for `items`, made by weights fingerprinted `key`.
pub struct CacheSpec<'a> {
    pub key: u64,
    pub items: &'a [usize],
    /// Number of items in the catalog (item indices are below it).
    pub catalog_items: usize,
    /// Channels, height, width of one map.
    pub dims: [usize; 3],
}

impl FeatureCache {
    /// Computes and writes the cache. `compute(items, mirrored)` returns the maps of a batch
    /// of items, `items.len() * c * h * w` floats.
    pub fn build(
        path: &Path,
        spec: &CacheSpec<'_>,
        batch: usize,
        mut compute: impl FnMut(&[usize], bool) -> Result<Vec<f32>>,
        progress: ProgressMode,
    ) -> Result<FeatureCache> {
        let CacheSpec {
            key,
            items,
            catalog_items,
            dims,
        } = *spec;
        let per = dims[0] * dims[1] * dims[2];
        let tmp = crate::fsio::temp_path(path);
        let file = File::create(&tmp).at(&tmp)?;
        let mut w = BufWriter::new(file);
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        for (i, d) in dims.iter().enumerate() {
            header[12 + 4 * i..16 + 4 * i].copy_from_slice(&(*d as u32).to_le_bytes());
        }
        header[24..32].copy_from_slice(&(items.len() as u64).to_le_bytes());
        header[32..40].copy_from_slice(&fingerprint(key, items).to_le_bytes());
        w.write_all(&header).at(&tmp)?;
        for &i in items {
            w.write_all(&(i as u64).to_le_bytes()).at(&tmp)?;
        }
        let bar = Progress::new("feature cache", items.len() as u64, progress);
        let mut halves = Vec::new();
        for chunk in items.chunks(batch.max(1)) {
            let plain = compute(chunk, false)?;
            let mirrored = compute(chunk, true)?;
            if plain.len() != chunk.len() * per || mirrored.len() != plain.len() {
                return Err(Error::Usage(format!(
                    "backbone maps have {} values for {} images, expected {} each",
                    plain.len(),
                    chunk.len(),
                    per
                )));
            }
            for j in 0..chunk.len() {
                for src in [&plain, &mirrored] {
                    halves.clear();
                    halves.extend(
                        src[j * per..(j + 1) * per]
                            .iter()
                            .map(|&x| f16::from_f32(x)),
                    );
                    w.write_all(bytemuck::cast_slice(&halves)).at(&tmp)?;
                }
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        drop(file);
        crate::fsio::rename_into_place(&tmp, path)?;
        FeatureCache::open(path, key, items, catalog_items)?.ok_or_else(|| {
            Error::corrupted(path, "the cache just written does not match its own key")
        })
    }

    /// Opens an existing cache; `Ok(None)` when absent or made for other weights or items
    /// (it is then rebuilt), an error when the file is damaged.
    pub fn open(
        path: &Path,
        key: u64,
        items: &[usize],
        catalog_items: usize,
    ) -> Result<Option<FeatureCache>> {
        if !path.is_file() {
            return Ok(None);
        }
        // Cache files are only ever published by rename and never written in place, so
        // the mapped bytes cannot change or shrink while mapped.
        let mmap = crate::fsio::map_path(path)?;
        if mmap.len() < HEADER || &mmap[..8] != MAGIC {
            return Err(Error::corrupted(
                path,
                "not a tailor feature cache (bad magic)",
            ));
        }
        let u32_at = |o: usize| u32::from_le_bytes(mmap[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(mmap[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != VERSION {
            return Err(Error::IncompatibleVersion {
                path: path.to_path_buf(),
                found: version,
                supported: VERSION.to_string(),
                hint: "delete the cache file; training rebuilds it".into(),
            });
        }
        let dims = [
            u32_at(12) as usize,
            u32_at(16) as usize,
            u32_at(20) as usize,
        ];
        let count = u64_at(24) as usize;
        if u64_at(32) != fingerprint(key, items) || count != items.len() {
            return Ok(None);
        }
        let per = dims[0] * dims[1] * dims[2];
        let expected = HEADER + count * 8 + count * 2 * per * 2;
        if mmap.len() != expected {
            return Err(Error::corrupted(
                path,
                format!(
                    "{} bytes, expected {expected} for {count} items",
                    mmap.len()
                ),
            ));
        }
        let mut slots = vec![ABSENT; catalog_items];
        for (slot, &want) in items.iter().enumerate() {
            let got = u64_at(HEADER + slot * 8) as usize;
            if got != want || got >= catalog_items {
                return Err(Error::corrupted(
                    path,
                    format!("item list differs at slot {slot}"),
                ));
            }
            slots[got] = slot as u32;
        }
        Ok(Some(FeatureCache {
            path: path.to_path_buf(),
            mmap,
            slots,
            dims,
            count,
        }))
    }

    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn map_f16(&self, item: usize, flip: bool) -> Result<&[f16]> {
        let slot = match self.slots.get(item) {
            Some(&s) if s != ABSENT => s as usize,
            _ => {
                return Err(Error::Usage(format!(
                    "item {item} is not in the feature cache {}",
                    self.path.display()
                )))
            }
        };
        let per = self.dims[0] * self.dims[1] * self.dims[2];
        let start = HEADER + self.count * 8 + (slot * 2 + flip as usize) * per * 2;
        bytemuck::try_cast_slice(&self.mmap[start..start + per * 2])
            .map_err(|e| Error::corrupted(&self.path, format!("misaligned map: {e}")))
    }

    /// `[B, c, h, w]` f32 maps of `items`, mirrored where `flips[i]`.
    pub fn gather(&self, items: &[usize], flips: &[bool], device: &Device) -> Result<Tensor> {
        let per = self.dims[0] * self.dims[1] * self.dims[2];
        let mut data = vec![0f32; items.len() * per];
        for (i, (&item, &flip)) in items.iter().zip(flips).enumerate() {
            let src = self.map_f16(item, flip)?;
            for (d, s) in data[i * per..(i + 1) * per].iter_mut().zip(src) {
                *d = s.to_f32();
            }
        }
        let [c, h, w] = self.dims;
        Ok(Tensor::from_vec(data, (items.len(), c, h, w), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_open_gather_and_reject() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.cache");
        let items = [3usize, 1, 4];
        let dims = [2, 1, 2];
        let value =
            |item: usize, flip: bool, k: usize| (item * 10 + k) as f32 + flip as u8 as f32 * 0.5;
        let spec = CacheSpec {
            key: 42,
            items: &items,
            catalog_items: 6,
            dims,
        };
        let cache = FeatureCache::build(
            &path,
            &spec,
            2,
            |chunk, flip| {
                Ok(chunk
                    .iter()
                    .flat_map(|&i| (0..4).map(move |k| value(i, flip, k)))
                    .collect())
            },
            ProgressMode::Quiet,
        )
        .unwrap();
        assert_eq!(cache.len(), 3);
        let t = cache.gather(&[4, 3], &[true, false], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 2, 1, 2]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, vec![40.5, 41.5, 42.5, 43.5, 30.0, 31.0, 32.0, 33.0]);
        assert!(cache.gather(&[0], &[false], &Device::Cpu).is_err());
        // Other weights or other items: not this cache.
        assert!(FeatureCache::open(&path, 43, &items, 6).unwrap().is_none());
        assert!(FeatureCache::open(&path, 42, &[3, 1], 6).unwrap().is_none());
        // Truncated file: corrupted, named.
        let bytes = std::fs::read(&path).unwrap();
        let bad = dir.path().join("bad.cache");
        std::fs::write(&bad, &bytes[..bytes.len() - 2]).unwrap();
        let err = FeatureCache::open(&bad, 42, &items, 6).err().unwrap();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    }
}

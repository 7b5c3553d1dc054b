//! The catalog readers `embed` uses hold a compact table and one row at a time, not every
//! row: the peak heap while reading a manifest stays near the table's own bytes. Measured
//! with a counting allocator (bytes asked of the allocator, deterministic), never RSS.
//!
//! One test in this binary: the allocator's counters are process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tailor::catalog;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed straight to the system allocator with the caller's own
// arguments; the wrapper only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            // Counted as a copy: both blocks exist while it moves.
            grew(new_size);
            CURRENT.fetch_sub(layout.size(), Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ATTRIBUTES: [&str; 7] = [
    "category", "colour", "pattern", "neckline", "sleeve", "length", "fit",
];

/// A synth-like manifest: ids `sf-0000000`, `images/0000000.png`, a split, 7 labels.
fn write_manifests(dir: &Path, n: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::fmt::Write;
    let mut csv = format!("id,image,split,{}\n", ATTRIBUTES.join(","));
    let mut jsonl = String::new();
    for i in 0..n {
        let split = ["train", "train", "valid", "test"][i % 4];
        let values: Vec<String> = (0..ATTRIBUTES.len())
            .map(|a| format!("v{}", (i * (a + 3)) % (5 + a)))
            .collect();
        writeln!(
            csv,
            "sf-{i:07},images/{i:07}.png,{split},{}",
            values.join(",")
        )
        .unwrap();
        let labels: Vec<String> = ATTRIBUTES
            .iter()
            .zip(&values)
            .map(|(a, v)| format!("\"{a}\":\"{v}\""))
            .collect();
        writeln!(
            jsonl,
            "{{\"id\":\"sf-{i:07}\",\"image\":\"images/{i:07}.png\",\"split\":\"{split}\",{}}}",
            labels.join(",")
        )
        .unwrap();
    }
    let (c, j) = (dir.join("m.csv"), dir.join("m.jsonl"));
    std::fs::write(&c, csv).unwrap();
    std::fs::write(&j, jsonl).unwrap();
    (c, j)
}

/// Peak heap bytes above the starting point while `f` runs, and its result.
fn peak_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (PEAK.load(Relaxed) - base, out)
}

#[test]
fn manifest_readers_hold_a_compact_table_not_every_row() {
    let n = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let (csv, jsonl) = write_manifests(dir.path(), n);

    for path in [&csv, &jsonl] {
        let (peak, table) = peak_during(|| catalog::open_items(path).unwrap());
        assert_eq!(table.len(), n);
        assert_eq!(table.id(n - 1), format!("sf-{:07}", n - 1));
        assert_eq!(table.image(7), Path::new("images/0000007.png"));
        assert_eq!(table.schema.len(), 7);
        let held = table.heap_bytes();
        // 10 + 18 bytes of text, 16 of offsets, 14 of label codes: 58 an item.
        assert!(
            held / n <= 60,
            "{}: table holds {held} bytes",
            path.display()
        );
        // While reading: the table growing (a copy when a buffer moves), one byte of
        // split and one duplicate-check entry per item. Every row kept as strings (as the
        // readers once did) cost over 1,000 bytes an item.
        let per_item = peak / n;
        eprintln!(
            "{}: table {held} bytes, reading peak {peak} ({per_item} an item)",
            path.display()
        );
        assert!(
            per_item < 200,
            "{}: reading peaked at {per_item} bytes an item ({peak} in all)",
            path.display()
        );
    }

    // The whole catalog (evaluation lists and owned items) is built from the same rows.
    let whole = catalog::open(&csv).unwrap();
    let table = catalog::open_items(&csv).unwrap();
    assert_eq!(whole.items.len(), table.len());
    for i in [0, 1, n / 2, n - 1] {
        assert_eq!(whole.items[i].id, table.id(i));
        assert_eq!(whole.items[i].image, table.image(i));
        for a in 0..7 {
            assert_eq!(whole.labels.get(i, a), table.labels.get(i, a));
        }
    }
    assert_eq!(whole.schema, table.schema);
}

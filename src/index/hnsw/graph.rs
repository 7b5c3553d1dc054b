//! The HNSW graph: a flat, memory-mappable layout ([`MappedGraph`]), an in-memory form
//! used while building and extending ([`MemGraph`]), and the layered best-first search
//! that walks either one.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::index::disk::format::{
    add, align_up, cast, check_len, map_file, mul, CrcWriter, FileEntry, GraphHeader, HEADER_LEN,
};
use crate::index::hnsw::distance::prefetch;

/// Largest neighbour list accepted in a graph file (sanity bound on a header field).
const MAX_DEGREE: u64 = 4096;
/// Highest level accepted (16 layers; a level above 15 has probability M^-16).
pub const MAX_LEVEL: usize = 15;

/// Read access to a layered proximity graph.
pub trait GraphRead {
    fn node_count(&self) -> usize;
    /// Entry node and its level (the top level), or `None` for an empty graph.
    fn entry(&self) -> Result<Option<(u32, usize)>>;
    /// Neighbours of `node` at `level`; empty if the node does not reach that level.
    fn neighbours(&self, node: u32, level: usize) -> Result<&[u32]>;
    /// Starts fetching `node`'s level-0 list before it is read (a hint: no checks).
    fn prefetch_neighbours(&self, _node: u32) {}
}

/// Similarity of the query to stored nodes (larger is closer).
pub trait Scorer {
    fn score(&self, node: u32) -> f32;
    /// Starts fetching a node's vector before it is scored.
    fn prefetch(&self, _node: u32) {}
}

/// A float that orders totally (NaN sorts lowest), for heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sim(pub f32);
impl Eq for Sim {}
impl PartialOrd for Sim {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sim {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Visited marks, reused across queries on a thread (an epoch per query avoids clearing).
#[derive(Default)]
pub(crate) struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    pub(super) fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }
    /// Marks `node`; true if it was not marked in this query.
    #[inline]
    pub(super) fn insert(&mut self, node: u32) -> bool {
        let m = &mut self.marks[node as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = const { RefCell::new(Visited { marks: Vec::new(), epoch: 0 }) };
}

fn check_node<G: GraphRead + ?Sized>(g: &G, node: u32, err: impl Fn() -> Error) -> Result<()> {
    if (node as usize) < g.node_count() {
        Ok(())
    } else {
        Err(err())
    }
}

#[allow(clippy::too_many_arguments)] // the walk's state, passed down without a struct
/// Best-first search of one level from `entries`, keeping the `ef` best accepted nodes.
/// Returns them sorted by decreasing similarity.
fn search_level<G: GraphRead + ?Sized, S: Scorer + ?Sized>(
    g: &G,
    s: &S,
    entries: &[(f32, u32)],
    ef: usize,
    level: usize,
    accept: Option<&dyn Fn(u32) -> bool>,
    visited: &mut Visited,
    bad_id: &dyn Fn(u32) -> Error,
) -> Result<Vec<(f32, u32)>> {
    let mut candidates: BinaryHeap<(Sim, u32)> = BinaryHeap::new();
    let mut results: BinaryHeap<Reverse<(Sim, u32)>> = BinaryHeap::new();
    let ok = |n: u32| accept.is_none_or(|f| f(n));
    for &(sim, node) in entries {
        candidates.push((Sim(sim), node));
        if ok(node) {
            results.push(Reverse((Sim(sim), node)));
            if results.len() > ef {
                results.pop();
            }
        }
    }
    let mut fresh: Vec<u32> = Vec::with_capacity(64);
    while let Some((Sim(sim), node)) = candidates.pop() {
        if results.len() >= ef {
            if let Some(Reverse((Sim(worst), _))) = results.peek() {
                if sim < *worst {
                    break;
                }
            }
        }
        // The walk's one serial miss: the next node's neighbour list. Most often the
        // next node is the best one left now, so its list loads while this node's
        // neighbours are scored.
        if level == 0 {
            if let Some(&(_, next)) = candidates.peek() {
                g.prefetch_neighbours(next);
            }
        }
        fresh.clear();
        for &nb in g.neighbours(node, level)? {
            check_node(g, nb, || bad_id(nb))?;
            if visited.insert(nb) {
                s.prefetch(nb);
                fresh.push(nb);
            }
        }
        for &nb in &fresh {
            let sim = s.score(nb);
            let worst = results.peek().map(|r| r.0 .0 .0);
            if results.len() < ef || worst.is_none_or(|w| sim > w) {
                candidates.push((Sim(sim), nb));
                if ok(nb) {
                    results.push(Reverse((Sim(sim), nb)));
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
    }
    let mut out: Vec<(f32, u32)> = results
        .into_iter()
        .map(|Reverse((Sim(s), n))| (s, n))
        .collect();
    out.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(out)
}

/// Greedy descent from the entry point to level `stop_above + 1`, then a best-first
/// search of the levels `<= stop_above` is left to the caller. Returns the entry set.
fn descend<G: GraphRead + ?Sized, S: Scorer + ?Sized>(
    g: &G,
    s: &S,
    entry: u32,
    top: usize,
    down_to: usize,
    bad_id: &dyn Fn(u32) -> Error,
) -> Result<(f32, u32)> {
    let mut cur = entry;
    let mut cur_sim = s.score(cur);
    for level in (down_to..=top).rev() {
        loop {
            let mut moved = false;
            for &nb in g.neighbours(cur, level)? {
                check_node(g, nb, || bad_id(nb))?;
                let sim = s.score(nb);
                if sim > cur_sim {
                    cur_sim = sim;
                    cur = nb;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
    }
    Ok((cur_sim, cur))
}

/// The `ef` nearest accepted nodes to the scorer's query, best first.
pub fn knn<G: GraphRead + ?Sized, S: Scorer + ?Sized>(
    g: &G,
    s: &S,
    ef: usize,
    accept: Option<&dyn Fn(u32) -> bool>,
    bad_id: &dyn Fn(u32) -> Error,
) -> Result<Vec<(f32, u32)>> {
    let Some((entry, top)) = g.entry()? else {
        return Ok(Vec::new());
    };
    let start = if top >= 1 {
        descend(g, s, entry, top, 1, bad_id)?
    } else {
        (s.score(entry), entry)
    };
    VISITED.with(|v| {
        let mut v = v.borrow_mut();
        v.reset(g.node_count());
        v.insert(start.1);
        search_level(g, s, &[start], ef.max(1), 0, accept, &mut v, bad_id)
    })
}

/// The flat graph file, mapped. Layout in `index-format.md`.
pub struct MappedGraph {
    path: PathBuf,
    map: Mmap,
    count: usize,
    m0: usize,
    m: usize,
    entry: Option<u32>,
    upper_blocks: u64,
    levels_at: u64,
    upper_start_at: u64,
    upper_at: u64,
}

impl MappedGraph {
    pub fn open(path: &Path) -> Result<MappedGraph> {
        let map = map_file(path)?;
        let h = GraphHeader::parse(&map, path)?;
        let (m0, count, m, entry, upper_blocks) = (h.m0, h.count, h.m, h.entry, h.upper_blocks);
        if m0 == 0 || m0 > MAX_DEGREE || m == 0 || m > MAX_DEGREE {
            return Err(Error::corrupted(
                path,
                format!("invalid degrees m0={m0} m={m}"),
            ));
        }
        if count > u32::MAX as u64 {
            return Err(Error::corrupted(
                path,
                format!("{count} nodes exceed the u32 limit"),
            ));
        }
        let levels_at = add(
            HEADER_LEN as u64,
            mul(mul(count, m0 + 1, path)?, 4, path)?,
            path,
        )?;
        let upper_start_at = align_up(add(levels_at, count, path)?, 4);
        let upper_at = add(upper_start_at, mul(count, 4, path)?, path)?;
        let end = add(
            upper_at,
            mul(mul(upper_blocks, m + 1, path)?, 4, path)?,
            path,
        )?;
        check_len(map.len(), end, path, "the graph")?;
        let entry = match entry {
            u64::MAX => None,
            e if e < count => Some(e as u32),
            e => {
                return Err(Error::corrupted(
                    path,
                    format!("entry node {e} is not below the node count {count}"),
                ))
            }
        };
        if entry.is_none() != (count == 0) {
            return Err(Error::corrupted(path, "entry node and node count disagree"));
        }
        Ok(MappedGraph {
            path: path.to_path_buf(),
            map,
            count: count as usize,
            m0: m0 as usize,
            m: m as usize,
            entry,
            upper_blocks,
            levels_at,
            upper_start_at,
            upper_at,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn degrees(&self) -> (usize, usize) {
        (self.m, self.m0)
    }

    pub fn level(&self, node: u32) -> Result<usize> {
        self.map
            .get(self.levels_at as usize + node as usize)
            .filter(|_| (node as usize) < self.count)
            .map(|&l| l as usize)
            .ok_or_else(|| self.corrupt(format!("node {node} out of range")))
    }

    /// Each node's first upper-level block (the upper-start table).
    fn upper_starts(&self) -> Result<&[u32]> {
        cast(
            &self.map,
            self.upper_start_at,
            self.count as u64,
            &self.path,
        )
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::corrupted(&self.path, reason)
    }

    fn block(&self, at: u64, index: u64, degree: usize) -> Result<&[u32]> {
        let words = (degree + 1) as u64;
        let block: &[u32] = cast(&self.map, at + index * words * 4, words, &self.path)?;
        let n = block[0] as usize;
        if n > degree {
            return Err(self.corrupt(format!("neighbour list of {n} exceeds the degree {degree}")));
        }
        Ok(&block[1..1 + n])
    }

    /// Reads the whole graph into memory (for extending it), checking it as
    /// [`MappedGraph::check`] does.
    #[cfg(test)]
    pub fn to_mem(&self) -> Result<MemGraph> {
        let mut g = MemGraph::new(self.m, self.m0);
        self.each_list(|node, level, l, list| {
            if l == 0 {
                g.push_node(level);
            }
            g.set_neighbours(node, l, list);
        })?;
        g.entry = self.entry()?;
        Ok(g)
    }

    /// Checks every list (degree, ids in range, a level-l list naming only nodes on level
    /// l or above, no self link, no repeated neighbour, unused slots zero), the upper-level
    /// layout (each node's first block is the running sum of the levels before it, and
    /// the blocks add up to the header's count) and the entry (on the top level), in one
    /// pass over the mapped file, holding nothing in memory. What `index verify` runs;
    /// opening and searching check only what they touch.
    pub fn check(&self) -> Result<()> {
        let mut problem: Option<String> = None;
        let mut top = 0;
        self.each_list(|node, level, l, list| {
            top = top.max(level);
            if problem.is_some() {
                return;
            }
            if list.contains(&node) {
                problem = Some(format!("node {node} lists itself on level {l}"));
            } else if (1..list.len()).any(|i| list[..i].contains(&list[i])) {
                problem = Some(format!("node {node} lists a neighbour twice on level {l}"));
            }
        })?;
        if let Some(p) = problem {
            return Err(self.corrupt(p));
        }
        let starts = self.upper_starts()?;
        let mut blocks = 0u64;
        for node in 0..self.count as u32 {
            if starts[node as usize] as u64 != blocks {
                return Err(self.corrupt(format!(
                    "node {node}'s upper blocks start at {}, the levels before it add up to {blocks}",
                    starts[node as usize]
                )));
            }
            blocks += self.level(node)? as u64;
        }
        if blocks != self.upper_blocks {
            return Err(self.corrupt(format!(
                "the levels add up to {blocks} upper blocks, the header says {}",
                self.upper_blocks
            )));
        }
        if let Some((entry, level)) = self.entry()? {
            if level != top {
                return Err(self.corrupt(format!(
                    "entry node {entry} is on level {level}, the top level is {top}"
                )));
            }
        }
        self.check_unused_slots()
    }

    /// Slots after each list's length must be zero (writers zero them), so a file's
    /// bytes are a function of its lists.
    fn check_unused_slots(&self) -> Result<()> {
        let regions = [
            (
                "level-0 list of node",
                HEADER_LEN as u64,
                self.count as u64,
                self.m0,
            ),
            (
                "upper-level block",
                self.upper_at,
                self.upper_blocks,
                self.m,
            ),
        ];
        for (what, at, blocks, degree) in regions {
            let words = (degree + 1) as u64;
            let all: &[u32] = cast(&self.map, at, blocks * words, &self.path)?;
            for (i, block) in all.chunks_exact(degree + 1).enumerate() {
                let n = (block[0] as usize).min(degree);
                if block[1 + n..].iter().any(|&x| x != 0) {
                    return Err(self.corrupt(format!("{what} {i} has non-zero unused slots")));
                }
            }
        }
        Ok(())
    }

    /// Calls `f(node, node_level, level, list)` for every list, nodes in order and levels
    /// from 0 up, after checking the list.
    pub(super) fn each_list(&self, mut f: impl FnMut(u32, usize, usize, &[u32])) -> Result<()> {
        for node in 0..self.count as u32 {
            let level = self.level(node)?;
            if level > MAX_LEVEL {
                return Err(self.corrupt(format!("node {node} has level {level} > {MAX_LEVEL}")));
            }
            for l in 0..=level {
                let list = self.neighbours(node, l)?;
                if let Some(&bad) = list.iter().find(|&&n| n as usize >= self.count) {
                    return Err(self.corrupt(format!("neighbour id {bad} out of range")));
                }
                for &nb in list {
                    if self.level(nb)? < l {
                        return Err(self.corrupt(format!(
                            "node {node} lists node {nb} on level {l}, above that node's level"
                        )));
                    }
                }
                f(node, level, l, list);
            }
        }
        Ok(())
    }
}

impl GraphRead for MappedGraph {
    fn node_count(&self) -> usize {
        self.count
    }

    fn entry(&self) -> Result<Option<(u32, usize)>> {
        match self.entry {
            None => Ok(None),
            Some(e) => Ok(Some((e, self.level(e)?))),
        }
    }

    fn neighbours(&self, node: u32, level: usize) -> Result<&[u32]> {
        if node as usize >= self.count {
            return Err(self.corrupt(format!("node {node} out of range")));
        }
        if level == 0 {
            return self.block(HEADER_LEN as u64, node as u64, self.m0);
        }
        if self.level(node)? < level {
            return Ok(&[]);
        }
        let starts = self.upper_starts()?;
        let index = starts[node as usize] as u64 + (level as u64 - 1);
        if index >= self.upper_blocks {
            return Err(self.corrupt(format!("upper block {index} of node {node} out of range")));
        }
        self.block(self.upper_at, index, self.m)
    }

    #[inline]
    fn prefetch_neighbours(&self, node: u32) {
        // From the start of the block's first cache line (the map is page-aligned), so
        // a block that straddles one more line than its length suggests is fetched whole.
        let at = HEADER_LEN + node as usize * (self.m0 + 1) * 4;
        if let Some(lines) = self.map.get(at & !63..at + (self.m0 + 1) * 4) {
            prefetch(lines, usize::MAX);
        }
    }
}

/// The graph in memory: fixed-stride level-0 lists and per-node upper lists.
#[derive(Debug, Clone, PartialEq)]
pub struct MemGraph {
    pub m: usize,
    pub m0: usize,
    levels: Vec<u8>,
    level0: Vec<u32>,
    upper: Vec<Vec<Vec<u32>>>,
    pub entry: Option<(u32, usize)>,
}

impl MemGraph {
    pub fn new(m: usize, m0: usize) -> MemGraph {
        MemGraph {
            m,
            m0,
            levels: Vec::new(),
            level0: Vec::new(),
            upper: Vec::new(),
            entry: None,
        }
    }

    pub fn push_node(&mut self, level: usize) -> u32 {
        let id = self.levels.len() as u32;
        self.levels.push(level as u8);
        self.level0.extend(std::iter::repeat_n(0, self.m0 + 1));
        self.upper.push(vec![Vec::new(); level]);
        id
    }

    #[cfg(test)]
    pub fn level(&self, node: u32) -> usize {
        self.levels[node as usize] as usize
    }

    fn cap(&self, level: usize) -> usize {
        if level == 0 {
            self.m0
        } else {
            self.m
        }
    }

    /// Sets a node's list at a level, truncated to the level's degree.
    pub fn set_neighbours(&mut self, node: u32, level: usize, list: &[u32]) {
        let list = &list[..list.len().min(self.cap(level))];
        if level == 0 {
            let at = node as usize * (self.m0 + 1);
            self.level0[at] = list.len() as u32;
            self.level0[at + 1..at + 1 + list.len()].copy_from_slice(list);
            self.level0[at + 1 + list.len()..at + 1 + self.m0].fill(0);
        } else if let Some(slot) = self.upper[node as usize].get_mut(level - 1) {
            *slot = list.to_vec();
        }
    }

    pub(super) fn list(&self, node: u32, level: usize) -> &[u32] {
        if level == 0 {
            let at = node as usize * (self.m0 + 1);
            &self.level0[at + 1..at + 1 + self.level0[at] as usize]
        } else {
            self.upper[node as usize]
                .get(level - 1)
                .map(Vec::as_slice)
                .unwrap_or(&[])
        }
    }

    /// Writes the flat graph file.
    pub fn write(&self, path: &Path) -> Result<FileEntry> {
        let count = self.levels.len() as u64;
        let upper_blocks: u64 = self.levels.iter().map(|&l| l as u64).sum();
        let entry = self.entry.map_or(u64::MAX, |(e, _)| e as u64);
        let mut w = CrcWriter::create(path)?;
        let header = GraphHeader {
            m0: self.m0 as u64,
            count,
            m: self.m as u64,
            entry,
            upper_blocks,
        };
        w.write(&header.to_bytes())?;
        for chunk in self.level0.chunks(1 << 16) {
            w.write(bytemuck::cast_slice(chunk))?;
        }
        w.write(&self.levels)?;
        w.pad_to(4)?;
        let mut starts = Vec::with_capacity(self.levels.len());
        let mut next = 0u32;
        for &l in &self.levels {
            starts.push(next);
            next += l as u32;
        }
        w.write(bytemuck::cast_slice(&starts))?;
        let mut block = vec![0u32; self.m + 1];
        for lists in &self.upper {
            for list in lists {
                block.iter_mut().for_each(|x| *x = 0);
                block[0] = list.len() as u32;
                block[1..1 + list.len()].copy_from_slice(list);
                w.write(bytemuck::cast_slice(&block))?;
            }
        }
        w.finish()
    }
}

impl GraphRead for MemGraph {
    fn node_count(&self) -> usize {
        self.levels.len()
    }
    fn entry(&self) -> Result<Option<(u32, usize)>> {
        Ok(self.entry)
    }
    fn neighbours(&self, node: u32, level: usize) -> Result<&[u32]> {
        Ok(self.list(node, level))
    }
}

/// Draws an HNSW level: floor(-ln(u) / ln(m)), capped at [`MAX_LEVEL`].
pub fn draw_level(m: usize, u: f64) -> usize {
    let scale = 1.0 / (m.max(2) as f64).ln();
    ((-u.max(f64::MIN_POSITIVE).ln() * scale).floor() as usize).min(MAX_LEVEL)
}

#[cfg(test)]
mod tests {
    use super::super::builder::{HnswBuilder, Rows as FlatRows};
    use super::*;
    use rand::{Rng, SeedableRng};

    struct Rows<'a>(&'a [Vec<f32>], Vec<f32>);
    impl Scorer for Rows<'_> {
        fn score(&self, n: u32) -> f32 {
            super::super::distance::dot_f32(&self.1, &self.0[n as usize])
        }
    }

    fn random_unit(rng: &mut impl Rng, n: usize, dim: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
                super::super::distance::normalize(&mut v);
                v
            })
            .collect()
    }

    #[test]
    fn insert_write_open_search_round_trip() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let data = random_unit(&mut rng, 400, 8);
        let flat: Vec<f32> = data.concat();
        let levels: Vec<usize> = (0..data.len()).map(|_| draw_level(8, rng.gen())).collect();
        let b = HnswBuilder::new(FlatRows::new(&flat, 8), 8, 16, 64, &levels);
        b.insert_from(
            0,
            &crate::progress::Progress::new("t", 0, crate::progress::ProgressMode::Quiet),
        );
        let g = b.into_graph();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.graph");
        g.write(&p).unwrap();
        let mapped = MappedGraph::open(&p).unwrap();
        assert!(
            mapped.to_mem().unwrap() == g,
            "graph changed in the round trip"
        );
        let bad = |n: u32| Error::Usage(format!("{n}"));
        let mut hits = 0;
        for q in 0..50 {
            let query = data[q * 7].clone();
            let found = knn(&mapped, &Rows(&data, query), 10, None, &bad).unwrap();
            hits += found.iter().any(|&(_, n)| n as usize == q * 7) as usize;
            assert!(found.windows(2).all(|w| w[0].0 >= w[1].0));
        }
        assert!(hits >= 49, "self-match found for {hits}/50");
        // An accept filter restricts results.
        let even = |n: u32| n.is_multiple_of(2);
        let found = knn(
            &mapped,
            &Rows(&data, data[3].clone()),
            10,
            Some(&even),
            &bad,
        )
        .unwrap();
        assert_eq!(found.len(), 10);
        assert!(found.iter().all(|&(_, n)| n.is_multiple_of(2)));
    }

    #[test]
    fn corrupted_graph_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.graph");
        let mut g = MemGraph::new(2, 4);
        for _ in 0..3 {
            g.push_node(0);
        }
        g.set_neighbours(0, 0, &[1, 2]);
        g.entry = Some((0, 0));
        g.write(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        // Neighbour id past the node count.
        let mut bad = bytes.clone();
        bad[64 + 4..64 + 8].copy_from_slice(&99u32.to_le_bytes());
        std::fs::write(&p, &bad).unwrap();
        let mg = MappedGraph::open(&p).unwrap();
        let q = vec![vec![1.0f32]; 3];
        let err = knn(&mg, &Rows(&q, vec![1.0]), 4, None, &|n| {
            Error::corrupted(&p, format!("neighbour {n}"))
        });
        assert!(matches!(err, Err(Error::Corrupted { .. })));
        // List length above the degree.
        let mut bad = bytes.clone();
        bad[64..68].copy_from_slice(&9u32.to_le_bytes());
        std::fs::write(&p, &bad).unwrap();
        let mg = MappedGraph::open(&p).unwrap();
        assert!(matches!(mg.neighbours(0, 0), Err(Error::Corrupted { .. })));
        // Entry past the end, truncation.
        let mut bad = bytes.clone();
        bad[32..40].copy_from_slice(&7u64.to_le_bytes());
        std::fs::write(&p, &bad).unwrap();
        assert!(matches!(
            MappedGraph::open(&p),
            Err(Error::Corrupted { .. })
        ));
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(
            MappedGraph::open(&p),
            Err(Error::Corrupted { .. })
        ));
    }
}

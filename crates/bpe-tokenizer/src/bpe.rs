//! The merge loop: HF `tokenizers`' BPE `Word::merge_all`, reproduced without its
//! per-call allocations and without its re-lookup of stale queue entries.
//!
//! The semantics are "repeatedly merge the adjacent pair with the lowest rank, the
//! leftmost one on ties". A priority queue keyed by `(rank, position)` holds every
//! pair that has a merge; entries go stale when one of their symbols changes.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// Marks "no neighbour" in the symbol list.
pub(crate) const NONE: u32 = u32::MAX;

/// One merge rule: the pair `(left, right)` merges into `new_id` with priority `rank`
/// (lower merges first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Merge {
    pub(crate) rank: u32,
    pub(crate) new_id: u32,
}

/// Pair of ids packed into the map key.
#[inline(always)]
pub(crate) fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// Merge rules keyed by `pair_key(left, right)`.
pub(crate) type MergeMap = FxHashMap<u64, Merge>;

/// A symbol of the word being merged, in a doubly linked list over a `Vec`.
///
/// `len` is the symbol's length in input units; it only ever grows, and a removed
/// symbol has `len == 0`. That makes "this pair is unchanged since it was queued"
/// equivalent to "the left symbol is alive and the two lengths still add up to the
/// queued span": a symbol's start never moves and its id is a function of its span.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    id: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// A queued pair. Ordered so that `BinaryHeap` pops the lowest `(rank, pos)` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    /// `rank << 32 | pos`.
    key: u64,
    new_id: u32,
    /// Sum of the two symbols' lengths when queued; a mismatch means stale.
    span: u32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key.cmp(&self.key)
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The word being merged: a symbol list and the merge queue, both reused across words.
#[derive(Debug, Default, Clone)]
pub(crate) struct Word {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Candidate>,
}

impl Word {
    pub(crate) fn clear(&mut self) {
        self.symbols.clear();
        self.heap.clear();
    }

    /// Appends an initial symbol of `len` input units (`len >= 1`).
    #[inline(always)]
    pub(crate) fn push(&mut self, id: u32, len: u32) {
        let n = self.symbols.len() as u32;
        let prev = if n == 0 { NONE } else { n - 1 };
        self.symbols.push(Symbol { id, len, prev, next: n + 1 });
    }

    /// Runs all merges, then calls `emit` with each resulting id in order.
    pub(crate) fn merge_and_emit(&mut self, merges: &MergeMap, mut emit: impl FnMut(u32)) {
        let n = self.symbols.len();
        if n == 0 {
            return;
        }
        self.symbols[n - 1].next = NONE;
        if n > 1 {
            self.merge_all(merges);
        }
        let mut i = 0u32;
        while i != NONE {
            let s = self.symbols[i as usize];
            emit(s.id);
            i = s.next;
        }
    }

    fn merge_all(&mut self, merges: &MergeMap) {
        let symbols = &mut self.symbols;
        let heap = &mut self.heap;
        heap.clear();
        for (pos, w) in symbols.windows(2).enumerate() {
            if let Some(m) = merges.get(&pair_key(w[0].id, w[1].id)) {
                heap.push(Candidate {
                    key: (u64::from(m.rank) << 32) | pos as u64,
                    new_id: m.new_id,
                    span: w[0].len + w[1].len,
                });
            }
        }
        while let Some(top) = heap.pop() {
            let pos = top.key as u32;
            let left = symbols[pos as usize];
            if left.len == 0 || left.next == NONE {
                continue;
            }
            let right = symbols[left.next as usize];
            if left.len + right.len != top.span {
                continue;
            }
            symbols[pos as usize] = Symbol { id: top.new_id, len: top.span, prev: left.prev, next: right.next };
            symbols[left.next as usize].len = 0;
            if right.next != NONE {
                symbols[right.next as usize].prev = pos;
                let after = symbols[right.next as usize];
                if let Some(m) = merges.get(&pair_key(top.new_id, after.id)) {
                    heap.push(Candidate {
                        key: (u64::from(m.rank) << 32) | u64::from(pos),
                        new_id: m.new_id,
                        span: top.span + after.len,
                    });
                }
            }
            if left.prev != NONE {
                let before = symbols[left.prev as usize];
                if let Some(m) = merges.get(&pair_key(before.id, top.new_id)) {
                    heap.push(Candidate {
                        key: (u64::from(m.rank) << 32) | u64::from(left.prev),
                        new_id: m.new_id,
                        span: before.len + top.span,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids: a=0 b=1 c=2 ab=3 bc=4 abc=5 aa=6.
    fn merges(rules: &[(u32, u32, u32)]) -> MergeMap {
        rules
            .iter()
            .enumerate()
            .map(|(rank, &(l, r, new_id))| (pair_key(l, r), Merge { rank: rank as u32, new_id }))
            .collect()
    }

    fn run(ids: &[u32], m: &MergeMap) -> Vec<u32> {
        let mut s = Word::default();
        for &id in ids {
            s.push(id, 1);
        }
        let mut out = Vec::new();
        s.merge_and_emit(m, |id| out.push(id));
        out
    }

    #[test]
    fn lowest_rank_merges_first() {
        let m = merges(&[(1, 2, 4), (0, 1, 3), (0, 4, 5)]);
        assert_eq!(run(&[0, 1, 2], &m), vec![5]);
        let m = merges(&[(0, 1, 3), (1, 2, 4), (3, 2, 5)]);
        assert_eq!(run(&[0, 1, 2], &m), vec![5]);
    }

    #[test]
    fn ties_go_to_the_leftmost_pair() {
        let m = merges(&[(0, 0, 6)]);
        assert_eq!(run(&[0, 0, 0], &m), vec![6, 0]);
        assert_eq!(run(&[0, 0, 0, 0], &m), vec![6, 6]);
    }

    #[test]
    fn no_merges_leaves_symbols() {
        let m = merges(&[]);
        assert_eq!(run(&[2, 1, 0], &m), vec![2, 1, 0]);
        assert_eq!(run(&[], &m), Vec::<u32>::new());
    }
}

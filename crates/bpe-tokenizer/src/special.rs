//! Splitting out added-token text (`<bos>`, `<start_of_turn>`, `\n\n`, ...) before BPE.
//!
//! HF tokenizers finds added tokens with an Aho-Corasick automaton in
//! leftmost-longest mode on the raw, un-normalised text. Scanning left to right
//! and taking the longest token that starts at the first position where any
//! token starts gives the same matches, so a byte trie is enough.

/// Marks an absent trie edge or a node that ends no token.
const NONE: u32 = u32::MAX;

/// A flattened byte trie over the added-token texts.
#[derive(Debug, Clone)]
pub(crate) struct SpecialMatcher {
    /// Child of the root for every first byte; `NONE` when no token starts with it.
    root: Box<[u32; 256]>,
    /// Token id ending at each node, or `NONE`.
    node_token: Vec<u32>,
    /// Range of each node's edges in `edge_bytes`/`edge_targets`, sorted by byte.
    node_edges: Vec<(u32, u32)>,
    edge_bytes: Vec<u8>,
    edge_targets: Vec<u32>,
}

impl SpecialMatcher {
    /// Builds the trie. `patterns` yields `(text, id)`; empty texts must be filtered out by
    /// the caller. When two patterns share a text the later one wins, as in a map.
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        // Build with per-node child lists first, then flatten into sorted edge arrays so
        // the matching loop touches contiguous memory.
        let mut children: Vec<Vec<(u8, u32)>> = Vec::new();
        let mut token: Vec<u32> = Vec::new();
        let mut root = Box::new([NONE; 256]);
        for (text, id) in patterns {
            let bytes = text.as_bytes();
            let Some((&first, rest)) = bytes.split_first() else {
                continue;
            };
            let mut node = root[usize::from(first)];
            if node == NONE {
                node = new_node(&mut children, &mut token);
                root[usize::from(first)] = node;
            }
            for &b in rest {
                let kids = &children[node as usize];
                node = match kids.iter().find(|&&(kb, _)| kb == b) {
                    Some(&(_, child)) => child,
                    None => {
                        let child = new_node(&mut children, &mut token);
                        children[node as usize].push((b, child));
                        child
                    }
                };
            }
            token[node as usize] = id;
        }
        let mut node_edges = Vec::with_capacity(children.len());
        let mut edge_bytes = Vec::new();
        let mut edge_targets = Vec::new();
        for mut kids in children {
            kids.sort_unstable_by_key(|&(b, _)| b);
            let start = to_u32(edge_bytes.len());
            for (b, child) in kids {
                edge_bytes.push(b);
                edge_targets.push(child);
            }
            node_edges.push((start, to_u32(edge_bytes.len())));
        }
        Self { root, node_token: token, node_edges, edge_bytes, edge_targets }
    }

    /// True when some added token starts with byte `b`: the cheap test run on every byte.
    #[inline(always)]
    pub(crate) fn may_start(&self, b: u8) -> bool {
        self.root[usize::from(b)] != NONE
    }

    /// The longest added token that starts at `text[at..]`, as `(id, byte length)`.
    #[inline]
    pub(crate) fn longest_at(&self, text: &[u8], at: usize) -> Option<(u32, usize)> {
        let mut node = self.root[usize::from(*text.get(at)?)];
        if node == NONE {
            return None;
        }
        let mut best = None;
        let mut len = 1;
        loop {
            let id = self.node_token[node as usize];
            if id != NONE {
                best = Some((id, len));
            }
            let Some(&b) = text.get(at + len) else {
                break;
            };
            let (lo, hi) = self.node_edges[node as usize];
            let bytes = &self.edge_bytes[lo as usize..hi as usize];
            match bytes.binary_search(&b) {
                Ok(k) => node = self.edge_targets[lo as usize + k],
                Err(_) => break,
            }
            len += 1;
        }
        best
    }
}

fn new_node(children: &mut Vec<Vec<(u8, u32)>>, token: &mut Vec<u32>) -> u32 {
    children.push(Vec::new());
    token.push(NONE);
    to_u32(children.len() - 1)
}

/// Trie sizes are bounded by the total added-token text, which the builder already
/// checked fits in `u32`.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> SpecialMatcher {
        SpecialMatcher::new([("<b>", 1), ("<bos>", 2), ("\n", 3), ("\n\n", 4), ("ab", 5), ("bcd", 6)])
    }

    #[test]
    fn longest_match_wins_at_a_position() {
        let m = matcher();
        assert_eq!(m.longest_at(b"<bos>x", 0), Some((2, 5)));
        assert_eq!(m.longest_at(b"<b>", 0), Some((1, 3)));
        assert_eq!(m.longest_at(b"<bo", 0), None);
        assert_eq!(m.longest_at(b"\n\n\n", 0), Some((4, 2)));
        assert_eq!(m.longest_at(b"x", 0), None);
        assert_eq!(m.longest_at(b"x", 5), None);
    }

    #[test]
    fn may_start_reflects_first_bytes() {
        let m = matcher();
        assert!(m.may_start(b'<'));
        assert!(m.may_start(b'\n'));
        assert!(!m.may_start(b'c'));
    }
}

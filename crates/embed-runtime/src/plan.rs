//! How a batch is cut into work: which texts share a forward pass, and which parallelism mode
//! runs them.
//!
//! Coarse mode runs whole work items (a few texts whose tokens go through one GEMM per weight)
//! on different workers, each with serial matmuls. Fine mode runs one work item at a time and
//! splits every matmul across all workers. Work items never change a text's vector: the model's
//! GEMM rows are independent of the rows around them and attention is per text, so grouping is
//! purely a speed decision.

use std::ops::Range;

/// How the runtime spreads one `embed` call over its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parallelism {
    /// Texts in parallel: each worker runs whole work items with serial matmuls.
    Coarse,
    /// One work item at a time, every matmul split across all workers.
    Fine,
    /// Chosen per call from the batch's size and lengths (see [`choose_mode`]).
    #[default]
    Auto,
}

/// Relative cost of one text of `tokens` tokens: the per-token matmuls plus the attention,
/// which grows with the square of the length (capped by the sliding window on 20 of 24 layers).
/// Units are "token-equivalents"; only ratios matter.
pub(crate) fn text_cost(tokens: usize) -> f64 {
    // Per token: ~2·(768·(768+256+256+768) + 3·768·1152) multiply-adds per layer ≈ 8.5 M.
    // Attention per query token: 3 heads · 2 · 256 · visible keys ≈ 1.5 k per key.
    const LINEAR: f64 = 8.5e6;
    const PER_KEY: f64 = 1.5e3;
    let t = tokens as f64;
    let window = t.min(513.0);
    // 20 sliding layers see at most 513 keys, 4 full layers see all of them.
    let attention = PER_KEY * t * (20.0 * window + 4.0 * t) / 24.0;
    t * LINEAR + attention
}

/// Cuts texts into work items for coarse mode.
///
/// Items are made small enough that every worker gets several of them, so the dynamic queue can
/// balance the tail, but no smaller than `MIN_ITEM_TOKENS`, and never over `token_budget`.
pub(crate) fn coarse_items(
    order: &[usize],
    tokens: &[usize],
    token_budget: usize,
    workers: usize,
) -> Vec<Range<usize>> {
    let total: usize = order.iter().map(|&i| tokens[i]).sum();
    // About four items per worker; below ~64 tokens per GEMM the weight traffic of each matmul
    // is poorly amortised, so do not cut finer than that.
    const MIN_ITEM_TOKENS: usize = 64;
    let cap = (total / (workers.max(1) * 4)).max(MIN_ITEM_TOKENS);
    group(order, tokens, cap.min(token_budget))
}

/// Cuts texts into work items for fine mode: as large as the token budget allows, since every
/// matmul is split across workers anyway and bigger matmuls split better.
pub(crate) fn fine_items(order: &[usize], tokens: &[usize], token_budget: usize) -> Vec<Range<usize>> {
    group(order, tokens, token_budget)
}

/// Contiguous runs of `order` holding at most `cap` tokens each; a single text longer than `cap`
/// gets a run of its own. `order` lists text indices longest first; the ranges index into it.
fn group(order: &[usize], tokens: &[usize], cap: usize) -> Vec<Range<usize>> {
    let cap = cap.max(1);
    // Sized for the worst case up front: one allocation per call whatever the item count.
    let mut items = Vec::with_capacity(order.len());
    let mut start = 0;
    let mut acc = 0;
    for (pos, &i) in order.iter().enumerate() {
        let t = tokens[i];
        if pos > start && acc + t > cap {
            items.push(start..pos);
            start = pos;
            acc = 0;
        }
        acc += t;
    }
    if start < order.len() {
        items.push(start..order.len());
    }
    items
}

/// The rule `Parallelism::Auto` applies.
///
/// Coarse mode wins whenever the texts can be spread evenly over the workers, because it has no
/// synchronisation inside a forward pass; fine mode wins when there are too few texts (or one
/// dominating long text) to keep every worker busy. We simulate the coarse schedule (items taken
/// longest first by whichever worker is free) and pick coarse when its makespan is within
/// `FINE_EFFICIENCY` of a perfect split, i.e. when it beats what fine mode can achieve.
pub(crate) fn choose_mode(tokens: &[usize], items: &[Range<usize>], order: &[usize], workers: usize) -> Parallelism {
    if workers <= 1 {
        return Parallelism::Coarse;
    }
    if items.len() < 2 {
        return Parallelism::Fine;
    }
    let item_costs: Vec<f64> = items
        .iter()
        .map(|r| order[r.clone()].iter().map(|&i| text_cost(tokens[i])).sum())
        .collect();
    let total: f64 = item_costs.iter().sum();
    let mut load = vec![0.0f64; workers];
    for c in &item_costs {
        let (w, _) = load
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("workers > 1");
        load[w] += c;
    }
    let makespan = load.iter().cloned().fold(0.0, f64::max);
    // Fine mode splits each matmul over the workers but pays a barrier per matmul and serial
    // attention/norm work; measured efficiency on 2 cores is recorded in docs/ARCHITECTURE.md.
    const FINE_EFFICIENCY: f64 = 0.80;
    let fine_time = total / (workers as f64 * FINE_EFFICIENCY);
    if makespan <= fine_time {
        Parallelism::Coarse
    } else {
        Parallelism::Fine
    }
}

/// Text indices sorted longest first (ties keep input order, so plans are deterministic).
pub(crate) fn longest_first(tokens: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by(|&a, &b| tokens[b].cmp(&tokens[a]).then(a.cmp(&b)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers_every_text_once(items: &[Range<usize>], n: usize) {
        let mut next = 0;
        for r in items {
            assert_eq!(r.start, next, "items are contiguous and ordered");
            assert!(r.end > r.start, "no empty item");
            next = r.end;
        }
        assert_eq!(next, n);
    }

    #[test]
    fn items_cover_all_texts_and_respect_the_budget() {
        let tokens: Vec<usize> = (0..100).map(|i| 5 + (i * 37) % 200).collect();
        let order = longest_first(&tokens);
        for workers in [1, 2, 8] {
            for budget in [64, 256, 4096] {
                let items = coarse_items(&order, &tokens, budget, workers);
                covers_every_text_once(&items, tokens.len());
                let fine = fine_items(&order, &tokens, budget);
                covers_every_text_once(&fine, tokens.len());
                assert!(fine.len() <= items.len(), "fine items are the largest the budget allows");
                for r in &items {
                    let sum: usize = order[r.clone()].iter().map(|&i| tokens[i]).sum();
                    assert!(sum <= budget || r.len() == 1, "item {r:?} holds {sum} > {budget}");
                }
            }
        }
    }

    #[test]
    fn a_text_longer_than_the_budget_gets_its_own_item() {
        let tokens = [3000, 10, 10];
        let order = longest_first(&tokens);
        let items = coarse_items(&order, &tokens, 512, 2);
        assert_eq!(items[0], 0..1);
        covers_every_text_once(&items, 3);
    }

    #[test]
    fn longest_first_is_stable() {
        assert_eq!(longest_first(&[5, 9, 5, 9]), vec![1, 3, 0, 2]);
    }

    #[test]
    fn auto_picks_fine_for_one_text_and_coarse_for_many_even_ones() {
        let one = [12];
        let order = longest_first(&one);
        let items = coarse_items(&order, &one, 4096, 2);
        assert_eq!(choose_mode(&one, &items, &order, 2), Parallelism::Fine);

        let many = [12usize; 64];
        let order = longest_first(&many);
        let items = coarse_items(&order, &many, 4096, 2);
        assert_eq!(choose_mode(&many, &items, &order, 2), Parallelism::Coarse);
    }

    #[test]
    fn auto_picks_fine_when_one_long_text_dominates() {
        let tokens = [2000, 10, 10, 10];
        let order = longest_first(&tokens);
        let items = coarse_items(&order, &tokens, 4096, 2);
        assert_eq!(choose_mode(&tokens, &items, &order, 2), Parallelism::Fine);
    }

    #[test]
    fn cost_grows_faster_than_linear_only_through_attention() {
        assert!(text_cost(1000) > 10.0 * text_cost(100));
        assert!(text_cost(2000) / text_cost(1000) > 2.0);
    }
}

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
/// balance the tail, but no smaller than `MIN_ITEM_TOKENS` unless that would leave a worker
/// idle, and never over `token_budget`.
pub(crate) fn coarse_items(
    order: &[usize],
    tokens: &[usize],
    token_budget: usize,
    workers: usize,
) -> Vec<Range<usize>> {
    let total: usize = order.iter().map(|&i| tokens[i]).sum();
    let workers = workers.max(1);
    // About four items per worker; below ~64 tokens per GEMM the weight traffic of each matmul
    // is poorly amortised, so do not cut finer than that while there is enough work for every
    // worker; a small batch is cut into one share per worker instead.
    const MIN_ITEM_TOKENS: usize = 64;
    let floor = MIN_ITEM_TOKENS.min(total.div_ceil(workers));
    let cap = (total / (workers * 4)).max(floor);
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

/// Fixed cost of one forward pass in token-equivalents: streaming every weight matrix through
/// the caches once, which a pass of a few tokens cannot hide behind arithmetic. Measured: see
/// `PASS_OVERHEAD_TOKENS` in docs/ARCHITECTURE.md and `cargo xtask bench-matrix`.
const PASS_OVERHEAD_TOKENS: f64 = 6.0;
/// Share of perfect speed-up fine mode reaches on a pass (barriers, serial norms and attention
/// bookkeeping, the slower of the workers at every matmul).
const FINE_EFFICIENCY: f64 = 0.80;
/// Synchronisation cost of one fine-mode pass (about a hundred barriers), in token-equivalents.
const FINE_SYNC_TOKENS: f64 = 1.0;

/// Cost of running one work item as one serial forward pass.
fn item_cost(tokens: &[usize], order: &[usize], item: &Range<usize>) -> f64 {
    PASS_OVERHEAD_TOKENS * text_cost(1) + order[item.clone()].iter().map(|&i| text_cost(tokens[i])).sum::<f64>()
}

/// The rule `Parallelism::Auto` applies.
///
/// Both modes are costed with the same model: a forward pass costs a fixed weight-streaming
/// overhead plus its texts' [`text_cost`]. Coarse mode runs its items on whichever worker is
/// free (simulated longest first, as the runtime hands them out); fine mode runs its (larger)
/// items one after another, each split over every worker at `FINE_EFFICIENCY` plus a
/// synchronisation cost. The cheaper estimate wins; ties go to coarse, which has no barriers.
pub(crate) fn choose_mode(
    tokens: &[usize],
    order: &[usize],
    coarse: &[Range<usize>],
    fine: &[Range<usize>],
    workers: usize,
) -> Parallelism {
    if workers <= 1 {
        return Parallelism::Coarse;
    }
    let mut load = vec![0.0f64; workers];
    for item in coarse {
        let (w, _) = load
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("workers > 1");
        load[w] += item_cost(tokens, order, item);
    }
    let coarse_time = load.iter().cloned().fold(0.0, f64::max);
    let fine_time: f64 = fine
        .iter()
        .map(|item| {
            item_cost(tokens, order, item) / (workers as f64 * FINE_EFFICIENCY) + FINE_SYNC_TOKENS * text_cost(1)
        })
        .sum();
    if coarse_time <= fine_time { Parallelism::Coarse } else { Parallelism::Fine }
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

    fn auto(tokens: &[usize], workers: usize) -> Parallelism {
        let order = longest_first(tokens);
        let coarse = coarse_items(&order, tokens, 4096, workers);
        let fine = fine_items(&order, tokens, 4096);
        choose_mode(tokens, &order, &coarse, &fine, workers)
    }

    #[test]
    fn a_small_batch_is_cut_into_one_item_per_worker() {
        let tokens = [11usize; 4];
        let order = longest_first(&tokens);
        assert_eq!(coarse_items(&order, &tokens, 4096, 2).len(), 2);
        assert_eq!(coarse_items(&order, &tokens, 4096, 4).len(), 4);
    }

    #[test]
    fn auto_picks_fine_for_one_text_and_coarse_for_many_even_ones() {
        assert_eq!(auto(&[12], 2), Parallelism::Fine);
        assert_eq!(auto(&[12usize; 64], 2), Parallelism::Coarse);
        assert_eq!(auto(&[12usize; 64], 1), Parallelism::Coarse);
    }

    #[test]
    fn auto_picks_fine_when_one_long_text_dominates() {
        assert_eq!(auto(&[2000, 10, 10, 10], 2), Parallelism::Fine);
    }

    #[test]
    fn cost_grows_faster_than_linear_only_through_attention() {
        assert!(text_cost(1000) > 10.0 * text_cost(100));
        assert!(text_cost(2000) / text_cost(1000) > 2.0);
    }
}

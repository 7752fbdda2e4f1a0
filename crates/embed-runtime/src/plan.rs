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
    /// Chosen per call from the batch's size and lengths: both modes are costed with a model
    /// of how their work grows, scaled by what this `Embedder` has measured of each mode on this
    /// machine, and the cheaper one runs (see `tuner.rs` and docs/ARCHITECTURE.md).
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
/// Bigger passes amortise the weight traffic of every matmul (measured on one core: 16.2 ms
/// per text for passes of one 11-token text, 7.1 ms in passes of 700 tokens, flat from about
/// 256 tokens), while the dynamic queue wants a couple of items per worker to balance texts of
/// different lengths. So: two items per worker, each of at least `MIN_ITEM_TOKENS` unless
/// that would leave a worker without work, never over `token_budget`. One worker has nothing
/// to balance and gets budget-sized items.
pub(crate) fn coarse_items(
    order: &[usize],
    tokens: &[usize],
    token_budget: usize,
    workers: usize,
) -> Vec<Range<usize>> {
    if workers <= 1 {
        return group(order, tokens, token_budget);
    }
    let total: usize = order.iter().map(|&i| tokens[i]).sum();
    const MIN_ITEM_TOKENS: usize = 256;
    let per_worker = if total >= 2 * workers * MIN_ITEM_TOKENS { 2 } else { 1 };
    let parts = (per_worker * workers).min(order.len()).max(1);
    // A run can exceed its share by up to one text; it must still fit the budget.
    let longest = order.first().map_or(0, |&i| tokens[i]);
    if total.div_ceil(parts) + longest > token_budget {
        // Large batches: budget-sized passes, balanced by the queue.
        return group(order, tokens, token_budget);
    }
    split_even(order, tokens, parts, total)
}

/// Cuts `order` into about `parts` contiguous runs of nearly equal token counts: a run ends
/// before the text whose middle lies past the next `total / parts` boundary.
fn split_even(order: &[usize], tokens: &[usize], parts: usize, total: usize) -> Vec<Range<usize>> {
    let mut items = Vec::with_capacity(order.len());
    let (mut start, mut before, mut next) = (0, 0usize, 1usize);
    for (pos, &i) in order.iter().enumerate() {
        let t = tokens[i];
        // Compared in doubled units so the half-token middle stays an integer.
        let mid2 = 2 * before + t;
        if pos > start && mid2 * parts >= 2 * next * total {
            items.push(start..pos);
            start = pos;
            while 2 * next * total <= mid2 * parts {
                next += 1;
            }
        }
        before += t;
    }
    if start < order.len() {
        items.push(start..order.len());
    }
    items
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
/// the caches once, which a pass of a few tokens cannot hide behind arithmetic. Fitted to one
/// core's serial passes (`cargo xtask bench-matrix`, 2026-11-21, profiles/): 16.2 ms for one
/// 11-token text, 7.1 ms per text in passes of 64 texts, i.e. about 9 ms + 0.64 ms per token.
const PASS_OVERHEAD_TOKENS: f64 = 14.0;
/// Share of perfect speed-up fine mode reaches on a pass (barriers, serial bookkeeping, the
/// slower of the workers at every matmul). Fitted as above: fine on 2 threads over fine on 1
/// is 1.64× to 1.94× for batches of 1 to 64 short texts.
const FINE_EFFICIENCY: f64 = 0.92;
/// Synchronisation cost of one fine-mode pass (about a hundred barriers), in token-equivalents
/// (about 1.3 ms on 2 cores).
const FINE_SYNC_TOKENS: f64 = 2.0;

/// Cost of running one work item as one serial forward pass.
fn item_cost(tokens: &[usize], order: &[usize], item: &Range<usize>) -> f64 {
    PASS_OVERHEAD_TOKENS * text_cost(1) + order[item.clone()].iter().map(|&i| text_cost(tokens[i])).sum::<f64>()
}

/// The cost model's prior rule, without measurements (what a fresh tuner starts from).
#[cfg(test)]
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
    let (coarse_time, fine_time) = predict(tokens, order, coarse, fine, workers);
    if coarse_time <= fine_time { Parallelism::Coarse } else { Parallelism::Fine }
}

/// Predicted cost of running the call coarse and fine, in the model's units.
///
/// Both modes are costed with the same model: a forward pass costs a fixed weight-streaming
/// overhead plus its texts' [`text_cost`]. Coarse mode runs its items on whichever worker is
/// free (simulated longest first, as the runtime hands them out); fine mode runs its (larger)
/// items one after another, each split over every worker at `FINE_EFFICIENCY` plus a
/// synchronisation cost. The constants were fitted once; what they get wrong on a given
/// machine and day is what the tuner's measured ratios correct.
pub(crate) fn predict(
    tokens: &[usize],
    order: &[usize],
    coarse: &[Range<usize>],
    fine: &[Range<usize>],
    workers: usize,
) -> (f64, f64) {
    let workers = workers.max(1);
    // At most as many lanes as items: a worker without an item adds nothing (and this keeps
    // the call allocation-free for any worker count).
    let mut lanes = [0.0f64; 64];
    let load = &mut lanes[..workers.min(64)];
    for item in coarse {
        let (w, _) = load
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("at least one worker");
        load[w] += item_cost(tokens, order, item);
    }
    let coarse_time = load.iter().cloned().fold(0.0, f64::max);
    let fine_time: f64 = fine
        .iter()
        .map(|item| {
            item_cost(tokens, order, item) / (workers as f64 * FINE_EFFICIENCY) + FINE_SYNC_TOKENS * text_cost(1)
        })
        .sum();
    (coarse_time, fine_time)
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
    fn even_splits_balance_tokens_within_one_text() {
        for (tokens, parts) in [(vec![11usize; 64], 2), (vec![11usize; 128], 4), ((0..100).map(|i| 5 + i % 40).collect::<Vec<_>>(), 4)] {
            let order = longest_first(&tokens);
            let total: usize = tokens.iter().sum();
            let items = split_even(&order, &tokens, parts, total);
            covers_every_text_once(&items, tokens.len());
            assert_eq!(items.len(), parts, "{tokens:?}");
            let longest = *tokens.iter().max().unwrap();
            for r in &items {
                let sum: usize = order[r.clone()].iter().map(|&i| tokens[i]).sum();
                assert!(sum.abs_diff(total / parts) <= longest, "item {r:?}: {sum} tokens vs share {}", total / parts);
            }
        }
    }

    #[test]
    fn a_small_batch_is_cut_into_one_item_per_worker() {
        let tokens = [11usize; 4];
        let order = longest_first(&tokens);
        assert_eq!(coarse_items(&order, &tokens, 4096, 2).len(), 2);
        assert_eq!(coarse_items(&order, &tokens, 4096, 4).len(), 4);
        // One worker has nothing to balance: one pass as large as the budget allows.
        assert_eq!(coarse_items(&order, &tokens, 4096, 1).len(), 1);
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

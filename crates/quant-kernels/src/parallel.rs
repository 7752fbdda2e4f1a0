//! The parallel-for the caller supplies. This crate never spawns threads: the runtime owns them.

/// Runs independent tasks, possibly concurrently.
///
/// `run(n, task)` must call `task(i)` exactly once for every `i` in `0..n` and return only when
/// all calls have finished. Tasks write disjoint parts of the output, so any order and any
/// distribution over threads gives the same, bit-identical result.
pub trait ParallelFor: Sync {
    /// How many threads `run` spreads work over (used to size tasks; 1 for serial).
    fn num_threads(&self) -> usize;
    /// Calls `task(i)` for every `i` in `0..n_tasks`.
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync));

    /// Items per task when `n` items are cut into tasks for `run`: about [`TASKS_PER_THREAD`]
    /// tasks per thread, at least one item each.
    fn items_per_task(&self, n: usize) -> usize {
        n.div_ceil(TASKS_PER_THREAD * self.num_threads().max(1)).max(1)
    }
}

/// Tasks per thread a parallel region is cut into: enough that uneven tasks (another process
/// taking a core for a while, say) still finish together, few enough that handing them out
/// costs little.
pub const TASKS_PER_THREAD: usize = 4;

/// Runs every task on the calling thread, in order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl ParallelFor for Serial {
    fn num_threads(&self) -> usize {
        1
    }
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        (0..n_tasks).for_each(task);
    }
}

/// A raw pointer that tasks running on other threads may use to write disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub *mut T);

impl<T> SyncPtr<T> {
    /// The address. A method (not field access) so closures capture the `Sync` wrapper.
    #[inline(always)]
    pub fn ptr(self) -> *mut T {
        self.0
    }
}

// SAFETY: `SyncPtr` only carries the address; every user writes a region no other task touches,
// which the GEMM drivers guarantee by construction of their task ranges.
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

//! The persistent worker pool.
//!
//! Threads are created once, with the [`Embedder`](crate::Embedder), and every call reuses them:
//! nothing is spawned per call or per matmul (the seeds' Go runtime spawned 7.68 M goroutines
//! for 3,200 texts). The engine is `rayon-core`'s thread pool, whose scheduler is built on
//! crossbeam's work-stealing deques. We use it rather than a hand-written channel pool because
//! fine-grained mode hands *borrowed* closures (a GEMM's row blocks, which point into the
//! caller's scratch) to persistent threads; doing that without `rayon-core` needs a
//! lifetime-erasing `unsafe` block, and this project keeps `unsafe` to kernels and the mmap
//! boundary. `rayon_core::join` runs on stack-allocated jobs, so a parallel matmul allocates
//! nothing.

use quant_kernels::ParallelFor;

use crate::error::EmbedError;

/// A fixed set of worker threads shared by every call of one `Embedder`.
pub(crate) struct WorkerPool {
    pool: rayon_core::ThreadPool,
    threads: usize,
}

impl WorkerPool {
    pub(crate) fn new(threads: usize) -> Result<Self, EmbedError> {
        let threads = threads.max(1);
        let pool = rayon_core::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ggufembed-worker-{i}"))
            .build()
            .map_err(|e| EmbedError::Pool(e.to_string()))?;
        Ok(WorkerPool { pool, threads })
    }

    /// Number of worker threads.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` once on every worker, passing the worker's index (0..threads). Returns when all
    /// have finished; a panic in any of them is re-raised here.
    pub(crate) fn broadcast<F>(&self, f: F)
    where
        F: Fn(usize) + Sync,
    {
        self.pool.broadcast(|ctx| f(ctx.index()));
    }

    /// Runs `f` on a worker thread, where [`Fine::run`] splits work across the whole pool.
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce(&Fine) -> R + Send) -> R {
        let fine = Fine {
            threads: self.threads,
        };
        self.pool.install(|| f(&fine))
    }
}

/// The `ParallelFor` handed to the model in fine-grained mode: each matmul's tasks are spread
/// over the pool by recursive `join`, which keeps every worker busy without a queue allocation.
/// Only valid inside [`WorkerPool::install`], where `join` targets this pool.
pub(crate) struct Fine {
    threads: usize,
}

impl ParallelFor for Fine {
    fn num_threads(&self) -> usize {
        self.threads
    }

    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        split(0, n_tasks, task);
    }
}

fn split(start: usize, end: usize, task: &(dyn Fn(usize) + Sync)) {
    match end - start {
        0 => {}
        1 => task(start),
        n => {
            let mid = start + n / 2;
            rayon_core::join(|| split(start, mid, task), || split(mid, end, task));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn fine_runs_every_task_exactly_once() {
        let pool = WorkerPool::new(2).unwrap();
        for n in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.install(|fine| fine.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            }));
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n = {n}");
        }
    }

    #[test]
    fn broadcast_reaches_every_worker_once() {
        let pool = WorkerPool::new(3).unwrap();
        let seen = Mutex::new(Vec::new());
        pool.broadcast(|i| seen.lock().unwrap().push(i));
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), HashSet::from([0, 1, 2]));
    }

    #[test]
    fn fine_uses_more_than_one_thread() {
        let pool = WorkerPool::new(2).unwrap();
        let names = Mutex::new(HashSet::new());
        // Enough slow tasks that the second worker steals some.
        pool.install(|fine| fine.run(64, &|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            names.lock().unwrap().insert(std::thread::current().id());
        }));
        assert_eq!(names.into_inner().unwrap().len(), 2);
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_survives() {
        let pool = WorkerPool::new(2).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|fine| fine.run(8, &|i| assert!(i != 5, "boom")))
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.install(|fine| fine.run(8, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        }));
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }
}

//! State written on every request without a shared lock: each thread writes into a shard of
//! its own (an uncontended mutex, on cache lines of its own), and whoever reads the whole
//! takes every shard in turn. For counters and notes drained by a background task.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Aligned to a cache line pair, so two threads' shards never share one.
#[repr(align(128))]
#[derive(Default)]
struct Shard<T>(Mutex<T>);

pub struct PerThread<T> {
    shards: Box<[Shard<T>]>,
}

thread_local! {
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// This thread's shard number: threads take numbers in turn the first time they write.
fn shard_number() -> usize {
    SHARD.with(|shard| match shard.get() {
        Some(n) => n,
        None => {
            let n = THREADS.fetch_add(1, Ordering::Relaxed);
            shard.set(Some(n));
            n
        }
    })
}

impl<T: Default> Default for PerThread<T> {
    /// Twice as many shards as cores (4..=64), so runtime threads rarely share one.
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        PerThread {
            shards: (0..(threads * 2).clamp(4, 64))
                .map(|_| Shard::default())
                .collect(),
        }
    }
}

impl<T: Default> PerThread<T> {
    /// Runs `f` on this thread's shard.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let shard = &self.shards[shard_number() % self.shards.len()];
        f(&mut shard.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes what every shard holds, leaving each empty.
    pub fn take_each(&self) -> impl Iterator<Item = T> + '_ {
        self.shards
            .iter()
            .map(|shard| std::mem::take(&mut *shard.0.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn what_every_thread_writes_is_taken_once() {
        let counts = Arc::new(PerThread::<u64>::default());
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counts.with(|n| *n += 1);
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(counts.take_each().sum::<u64>(), 8000);
        assert_eq!(counts.take_each().sum::<u64>(), 0, "taken means emptied");
    }
}

//! openraft's async runtime for the control plane: tokio, except that the random numbers openraft
//! draws (its election timeouts) come from a per-thread generator that a simulation can seed.
//! Outside a simulation the generator is seeded from the operating system, as openraft's default
//! runtime does with `rand::thread_rng()`.

use openraft::{AsyncRuntime, TokioRuntime};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

thread_local! {
    static RNG: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Makes every later `thread_rng()` on this thread a function of `seed` (deterministic
/// simulation: every Raft task of the simulation runs on one thread).
pub fn seed_thread_rng(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Runtime;

type T = TokioRuntime;

impl AsyncRuntime for Runtime {
    type JoinError = <T as AsyncRuntime>::JoinError;
    type JoinHandle<O: Send + 'static> = <T as AsyncRuntime>::JoinHandle<O>;
    type Sleep = <T as AsyncRuntime>::Sleep;
    type Instant = <T as AsyncRuntime>::Instant;
    type TimeoutError = <T as AsyncRuntime>::TimeoutError;
    type Timeout<R, F: Future<Output = R> + Send> = <T as AsyncRuntime>::Timeout<R, F>;
    type ThreadLocalRng = StdRng;
    type OneshotSender<O: Send> = <T as AsyncRuntime>::OneshotSender<O>;
    type OneshotReceiverError = <T as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<O: Send> = <T as AsyncRuntime>::OneshotReceiver<O>;

    fn spawn<F>(future: F) -> Self::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        T::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        T::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        T::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + Send>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        T::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + Send>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        T::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        T::is_panic(join_error)
    }

    /// A generator drawn from this thread's seeded one when a simulation seeded it, otherwise
    /// from the operating system's entropy.
    fn thread_rng() -> StdRng {
        RNG.with(|r| match r.borrow_mut().as_mut() {
            Some(seeded) => StdRng::seed_from_u64(seeded.next_u64()),
            None => StdRng::from_entropy(),
        })
    }

    fn oneshot<O: Send>() -> (Self::OneshotSender<O>, Self::OneshotReceiver<O>) {
        T::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn seeded_draws_repeat_and_unseeded_differ() {
        let draw = || {
            (0..4)
                .map(|_| Runtime::thread_rng().gen_range(0..1_000_000u32))
                .collect::<Vec<_>>()
        };
        seed_thread_rng(9);
        let a = draw();
        seed_thread_rng(9);
        assert_eq!(a, draw());
        seed_thread_rng(10);
        assert_ne!(a, draw());
        RNG.with(|r| *r.borrow_mut() = None);
        assert_ne!(draw(), draw());
    }
}

//! Scheduling policy of the engine's threads.
//!
//! The event loop and the workers run under Linux's `SCHED_BATCH` policy: the same fair share of
//! the CPU as any other thread (same nice value), but a thread woken up does not preempt the one
//! running. On a busy core this is what lets requests batch: bytes arriving while a worker runs
//! the app wake the event loop, which then waits for the worker's time slice to end or for the
//! worker to block, and reads everything that arrived meanwhile in one round — instead of a
//! context switch per request. On an idle core nothing changes.

/// Puts the calling thread under `SCHED_BATCH` until dropped (then restores its policy).
pub struct BatchGuard {
    #[cfg(target_os = "linux")]
    previous: Option<libc::c_int>,
}

impl BatchGuard {
    pub fn enter() -> BatchGuard {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: pid 0 is the calling thread; the param struct is valid for the call.
            unsafe {
                let previous = libc::sched_getscheduler(0);
                let param = libc::sched_param { sched_priority: 0 };
                if previous == libc::SCHED_OTHER && libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0 {
                    return BatchGuard {
                        previous: Some(previous),
                    };
                }
            }
            BatchGuard { previous: None }
        }
        #[cfg(not(target_os = "linux"))]
        BatchGuard {}
    }
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(previous) = self.previous {
            // SAFETY: as in `enter`.
            unsafe {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(0, previous, &param);
            }
        }
    }
}

//! Log lines from the engine's Rust side: the levels (Python's logging numbers) and the sink the
//! server provides (the `maitre` logger). Depends on nothing else in the crate.

/// Where the engine's log lines go.
pub trait Log: Send + Sync {
    /// Log a line on the `maitre` logger (`level` as in Python's logging).
    fn log(&self, level: u8, msg: &str);
}

pub const LOG_INFO: u8 = 20;
pub const LOG_WARNING: u8 = 30;
pub const LOG_ERROR: u8 = 40;

//! The client for synchronous callers (the pipe's reinjection, the
//! archive-copy queue runner): each thread drives it on a current-thread
//! runtime of its own, made once.

use std::cell::OnceCell;
use std::future::Future;
use std::io;
use tokio::runtime::{Builder, Runtime};

thread_local! {
    static RUNTIME: OnceCell<io::Result<Runtime>> = const { OnceCell::new() };
}

/// Runs `work` to completion on this thread. Must not be called from
/// inside a tokio runtime (the async callers use the client directly).
pub fn run<T>(work: impl Future<Output = T>) -> io::Result<T> {
    RUNTIME.with(|cell| {
        let runtime = cell.get_or_init(|| Builder::new_current_thread().enable_all().build());
        match runtime {
            Ok(rt) => Ok(rt.block_on(work)),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot start the SMTP client's runtime: {e}"),
            )),
        }
    })
}

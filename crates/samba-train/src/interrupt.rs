//! Ctrl-C (SIGINT) and SIGTERM: the first asks the training loop to stop after the current step,
//! save a checkpoint and exit cleanly; a second one exits at once (checkpoints are written
//! atomically, so even that leaves the last complete checkpoint intact).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{Result, TrainError};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the process-wide handler (once; later calls return the same flag) and returns the
/// flag it sets.
pub fn install_stop_handler() -> Result<Arc<AtomicBool>> {
    if let Some(flag) = STOP.get() {
        return Ok(flag.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let seen = flag.clone();
    ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without saving (the last checkpoint is intact)");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: stopping after this step and saving a checkpoint (again to exit now)"
        );
    })
    .map_err(|e| TrainError::Backend(format!("cannot install the Ctrl-C/SIGTERM handler: {e}")))?;
    Ok(STOP.get_or_init(|| flag).clone())
}

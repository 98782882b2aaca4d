//! Progress bars for long operations, drawn on standard error only when it
//! is a terminal: a pipe or a log file gets the one-line summary alone.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

fn shown() -> bool {
    std::io::stderr().is_terminal()
}

/// The size of standard input when it is a regular file (`< big.txt`), so
/// that reading it can show how far it got.
pub fn stdin_file_len() -> Option<u64> {
    use std::os::fd::AsFd as _;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    (meta.is_file() && meta.len() > 0).then_some(meta.len())
}

/// A bar over the bytes of the input when its size is known, otherwise a
/// spinner; its message counts what was written. `None` off a terminal.
pub fn input(total_bytes: Option<u64>, what: &str) -> Option<ProgressBar> {
    if !shown() {
        return None;
    }
    let bar = match total_bytes {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} ({elapsed}, {eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} read, {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(format!("0 {what}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// A spinner with elapsed time for one long call whose progress cannot be
/// measured (it runs as one transaction). `None` off a terminal.
pub fn spinner(message: String) -> Option<ProgressBar> {
    if !shown() {
        return None;
    }
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

//! kcat, the real librdkafka client of the CLI's end-to-end tests.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `kcat -b 127.0.0.1:<port>` with `args`, writing `stdin` to it (if
/// given) and closing it; a kcat still running after 30 s is killed.
pub fn kcat(port: u16, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kcat")
        .args(["-b", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kcat");
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).expect("write to kcat");
    }
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().expect("kcat output")
}

/// The librdkafka version kcat links, as (major, minor, patch).
pub fn librdkafka_version() -> (u32, u32, u32) {
    let out = Command::new("kcat").arg("-V").output().expect("kcat -V");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let version = text
        .split("librdkafka ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("0.0.0");
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

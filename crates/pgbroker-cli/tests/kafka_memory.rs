//! The memory bound of `pgbroker serve` under the bad-input battery: the
//! real binary, as a child process, gets every malformed input of
//! `pgbroker-kafka`'s battery (huge and negative lengths, truncated
//! frames, unknown APIs and versions, absurd array counts, invalid UTF-8,
//! bad CRCs, compression bombs of every codec, HTTP and TLS on the
//! plaintext port, many connections at once each with a huge frame), while
//! its resident memory is sampled from `/proc/<pid>/status`. Its peak must
//! stay under [`PEAK_BOUND_MIB`], and a normal client is served after.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgbroker_testkit::cli::serve::Server;
use pgbroker_testkit::cli::Env;
use pgbroker_testkit::kafka::battery;

/// The bound on the server's peak resident memory during the battery,
/// stated in SECURITY.md: measured at 163 to 168 MiB (20 MiB at rest, 1 MiB
/// for each connection in the middle of a frame, a 64 MiB decompression
/// buffer and the frame it came in), with about twice that as headroom.
const PEAK_BOUND_MIB: u64 = 320;
/// Connections that each announce a 2 GiB frame, and connections that each
/// start a 16 MiB one and stop, all open at once.
const HUGE_FRAME_CONNECTIONS: usize = 64;

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn memory_stays_bounded_under_the_bad_input_battery() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("no /proc; skipping");
        return;
    }
    let env = Env::new();
    env.ok(&["topic", "create", "battered"]);
    let mut server = Server::start(&env, &[]);
    let pid = server.child.id();
    let addr: SocketAddr = format!("127.0.0.1:{}", server.port).parse().expect("address");
    let baseline = status_kib(pid, "VmRSS").expect("VmRSS");

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut peak, mut samples) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS") {
                    peak = peak.max(rss);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (peak, samples)
        })
    };
    battery::fire(addr, "battered", HUGE_FRAME_CONNECTIONS);
    stop.store(true, Ordering::Relaxed);
    let (sampled_peak, samples) = sampler.join().expect("sampler");
    let hwm = status_kib(pid, "VmHWM").expect("VmHWM");
    eprintln!(
        "pgbroker serve: VmRSS {baseline} KiB before the battery, highest sampled {sampled_peak} KiB \
         ({samples} samples), VmHWM {hwm} KiB; bound {PEAK_BOUND_MIB} MiB"
    );
    assert!(samples > 0, "memory was sampled");
    let peak = hwm.max(sampled_peak);
    assert!(
        peak <= PEAK_BOUND_MIB << 10,
        "peak resident memory {peak} KiB exceeds the bound of {PEAK_BOUND_MIB} MiB"
    );

    // The server is still up, and a new, well-behaved client is served.
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "pgbroker serve still running"
    );
    let mut client = battery::Client::connect(addr);
    assert!(client.api_versions_ok(), "ApiVersions answered after the battery");
    assert_eq!(
        client.produce("battered", &battery::batch(b"fine")),
        0,
        "produce after the battery"
    );
    let records = env.consume(&["battered", "--from-beginning"]);
    assert_eq!(
        pgbroker_testkit::cli::values(&records),
        ["after", "fine"],
        "only the good batches were written"
    );
}

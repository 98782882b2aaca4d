//! Replays the fuzz corpora in `fuzz/corpus/` (and the inputs that once
//! crashed a target, in `fuzz/regressions/`) through the same entry points
//! the fuzz targets call, so that every input found so far keeps passing
//! without a fuzzer installed.

use std::path::{Path, PathBuf};

#[global_allocator]
static ALLOC: pgbroker_kafka::GuardedAlloc = pgbroker_kafka::GuardedAlloc;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) {
            files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} has inputs");
    for f in files {
        let data = std::fs::read(&f).expect("read input");
        run(&data);
    }
}

#[test]
fn request_corpus() {
    replay("request", pgbroker_kafka::fuzzing::request);
}

#[test]
fn record_batch_corpus() {
    replay("record_batches", pgbroker_kafka::fuzzing::record_batches);
}

#[test]
fn decompress_corpus() {
    replay("decompress", pgbroker_kafka::fuzzing::decompress);
}

#[test]
fn sasl_corpus() {
    replay("sasl", pgbroker_kafka::fuzzing::sasl);
}

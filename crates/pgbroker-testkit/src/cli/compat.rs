//! The compat suites' scripts (`compat/*.sh`), run against the binary of
//! the running test: each prints a `PASS` or `FAIL` line per check and
//! exits non-zero when one failed.

use std::process::Command;

/// Runs `compat/<script>` with `PGBROKER_BIN` set to `bin`, echoes its
/// output, and asserts that it exited 0 with no `FAIL` line and printed each
/// of `required` (whole checks the suite must have run). Returns its
/// standard output for further checks.
pub fn run(script: &str, bin: &str, required: &[&str]) -> String {
    let path = format!("{}/../../compat/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(&path)
        .env("PGBROKER_BIN", bin)
        .output()
        .unwrap_or_else(|e| panic!("run compat/{script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success() && failures.is_empty(),
        "compat/{script} exited {}:\n{}\n{}",
        out.status,
        failures.join("\n"),
        stderr
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    for check in required {
        assert!(stdout.contains(check), "compat/{script}: missing {check:?}:\n{stdout}");
    }
    stdout
}

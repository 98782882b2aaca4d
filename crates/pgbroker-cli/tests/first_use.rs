//! What a new user meets first: the help, completions and manual pages,
//! the wording of messages and errors, and read-only commands that never
//! create a schema.

use std::process::Output;

use assert_cmd::Command;
use pgbroker_testkit::cli::{bin, schema_exists, text, Env};
use pgbroker_testkit::TestSchema;

/// The binary without database settings from the caller's environment.
fn pgbroker(args: &[&str]) -> Output {
    Command::new(bin())
        .env_remove("DATABASE_URL")
        .env_remove("PGBROKER_SCHEMA")
        .env_remove("PGBROKER_LOG")
        .args(args)
        .output()
        .expect("run pgbroker")
}

fn stdout_of(args: &[&str]) -> String {
    let out = pgbroker(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8(out.stdout).expect("utf-8")
}

const COMMANDS: &[&str] = &[
    "migrate",
    "topic",
    "produce",
    "consume",
    "group",
    "queue",
    "user",
    "acl",
    "maintain",
    "serve",
    "completions",
    "man",
];

#[test]
fn top_level_help_lists_every_command() {
    let help = stdout_of(&["--help"]);
    let (summary, rest) = help.split_once("Commands:").expect("a command list");
    for word in ["queues", "server", "PostgreSQL"] {
        assert!(summary.contains(word), "summary lacks {word}: {summary}");
    }
    let listed: Vec<&str> = rest
        .lines()
        .take_while(|l| !l.starts_with("Options:"))
        .filter_map(|l| l.strip_prefix("  ")?.split_whitespace().next())
        .collect();
    for c in COMMANDS {
        assert!(listed.contains(c), "{c} missing from the command list: {listed:?}");
    }
    // The grouped overview after the options names every command too.
    let (_, overview) = help.split_once("Streams:").expect("the overview");
    for c in COMMANDS {
        assert!(overview.contains(c), "{c} missing from the overview: {overview}");
    }
}

#[test]
fn main_verbs_show_examples() {
    for verb in ["topic", "produce", "consume", "group", "queue", "user", "acl", "serve"] {
        let help = stdout_of(&[verb, "--help"]);
        let (_, examples) = help
            .split_once("Examples:\n")
            .unwrap_or_else(|| panic!("`{verb} --help` has no examples:\n{help}"));
        assert!(
            examples.contains(&format!("pgbroker {verb}")),
            "`{verb} --help` examples do not run {verb}:\n{examples}"
        );
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let bash = stdout_of(&["completions", "bash"]);
    assert!(
        bash.contains("_pgbroker()") && bash.contains("complete -F _pgbroker"),
        "{bash}"
    );
    let zsh = stdout_of(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef pgbroker"), "{zsh}");
    let fish = stdout_of(&["completions", "fish"]);
    assert!(fish.contains("complete -c pgbroker"), "{fish}");
    for script in [&bash, &zsh, &fish] {
        for word in ["redrive", "reset-offsets", "sasl-mechanisms", "key-separator"] {
            assert!(script.contains(word), "{word} not completed");
        }
    }
    // bash accepts its script (read from standard input: it is longer
    // than one command-line argument may be).
    let mut child = std::process::Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run bash");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(bash.as_bytes()).expect("write the script");
    }
    let check = child.wait_with_output().expect("wait for bash");
    assert!(check.status.success(), "{}", text(&check));

    let out = pgbroker(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}

#[test]
fn man_pages_from_the_command_definitions() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH pgbroker 1"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for c in COMMANDS {
        assert!(page.contains(&format!("pgbroker\\-{c}(1)")), "{c} not in the page");
    }
    assert!(page.contains("\\-\\-database\\-url"), "global flags missing");

    let dir = std::env::temp_dir().join(format!("pgbroker-man-{}", std::process::id()));
    let out = stdout_of(&["man", "--dir", dir.to_str().expect("utf-8 path")]);
    assert!(out.contains("wrote manual pages"), "{out}");
    for name in [
        "pgbroker.1",
        "pgbroker-queue.1",
        "pgbroker-queue-redrive.1",
        "pgbroker-serve.1",
    ] {
        let page = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(page.contains(".TH"), "{name} is not a manual page");
    }
    std::fs::remove_dir_all(&dir).expect("remove the pages");
}

#[test]
fn read_only_commands_never_create_a_schema() {
    let env = Env::new();
    env.ok(&["migrate"]);
    let typo = TestSchema::new("typo");
    let read_only: &[&[&str]] = &[
        &["topic", "list"],
        &["topic", "describe", "orders"],
        &["group", "list"],
        &["group", "describe", "billing"],
        &["queue", "list"],
        &["queue", "stats", "jobs"],
        &["user", "list"],
        &["user", "key", "list", "alice"],
        &["acl", "list"],
        &["consume", "orders", "--idle-timeout", "1s"],
    ];
    for args in read_only {
        let mut all = vec!["--database-url", env.url.as_str(), "--schema", typo.name()];
        all.extend_from_slice(args);
        let out = pgbroker(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("schema \"{}\" has no pgbroker tables", typo.name()))
                && stderr.contains(&format!("pgbroker migrate --schema {}", typo.name())),
            "{args:?}: {stderr}"
        );
        assert!(!schema_exists(typo.name()), "{args:?} created the schema");
    }
    // The right schema still answers.
    assert!(env.ok(&["topic", "list"]).starts_with("TOPIC  PARTITIONS"));
}

#[test]
fn messages_count_in_the_singular_and_plural() {
    let env = Env::new();
    assert_eq!(env.ok(&["topic", "create", "t"]), "created topic t with 1 partition\n");
    let out = env.run(&["produce", "t"], "one\n");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "wrote 1 record to t\n");
    let out = env.run(&["produce", "t"], "a\nb\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "wrote 2 records to t\n");
    assert_eq!(
        env.ok(&["topic", "add-partitions", "t", "--count", "1"]),
        "topic t now has 2 partitions\n"
    );
}

#[test]
fn retention_forever_and_what_else_is_accepted() {
    let env = Env::new();
    env.ok(&["topic", "create", "kept", "--retention", "forever"]);
    env.ok(&["topic", "create", "kept-too", "--retention", "none"]);
    env.ok(&["topic", "create", "week", "--retention", "7d"]);
    let topics = env.json(&["topic", "list", "--format", "json"]);
    let retention = |name: &str| {
        topics
            .as_array()
            .expect("array")
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed"))["retention_ms"]
            .clone()
    };
    assert_eq!(retention("kept"), serde_json::Value::Null);
    assert_eq!(retention("kept-too"), serde_json::Value::Null);
    assert_eq!(retention("week"), serde_json::json!(7 * 24 * 3600 * 1000));

    let stderr = env.fail_with(2, &["topic", "create", "bad", "--retention", "forevr"], "");
    assert!(
        stderr.contains("7d") && stderr.contains("forever") && !stderr.contains("expected number at 0\n"),
        "{stderr}"
    );
    assert!(env.ok(&["topic", "list"]).lines().all(|l| !l.starts_with("bad ")));
}

#[test]
fn another_database_url_asks_for_a_postgresql_one() {
    for url in ["mysql://root@127.0.0.1:3306/app", "redis://127.0.0.1:6379"] {
        let out = pgbroker(&["--database-url", url, "topic", "list"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("a PostgreSQL URL is needed"), "{url}: {stderr}");
        assert!(!stderr.contains("invalid connection string"), "{stderr}");
    }
    // Key=value strings are not mistaken for URLs, and a password in one is
    // never echoed.
    let out = pgbroker(&[
        "--database-url",
        "host=127.0.0.1 port=1 user=x password=se://cret connect_timeout=1",
        "topic",
        "list",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("PostgreSQL URL is needed") && !stderr.contains("cret"),
        "{stderr}"
    );
}

#[test]
fn queue_stats_say_where_dead_letters_count() {
    let env = Env::new();
    env.ok(&["queue", "create", "jobs.dlq"]);
    env.ok(&[
        "queue",
        "create",
        "jobs",
        "--max-attempts",
        "1",
        "--dead-letter",
        "jobs.dlq",
    ]);
    env.ok_with(&["queue", "send", "jobs"], "resize 1.png\n");
    let received = env.ok(&["queue", "receive", "jobs"]);
    let receipt = received.split('\t').next().expect("receipt");
    assert_eq!(env.ok(&["queue", "nack", "jobs", receipt]), "released 1 message\n");

    let jobs = env.ok(&["queue", "stats", "jobs"]);
    let row: Vec<&str> = jobs.lines().nth(1).expect("row").split_whitespace().collect();
    assert_eq!(&row[..4], ["0", "0", "0", "1"], "{jobs}");
    assert!(
        jobs.contains("DEAD-LETTERED: messages of jobs out of attempts, held in its dead-letter queue jobs.dlq (counted there as READY)"),
        "{jobs}"
    );
    let dlq = env.ok(&["queue", "stats", "jobs.dlq"]);
    let row: Vec<&str> = dlq.lines().nth(1).expect("row").split_whitespace().collect();
    assert_eq!(&row[..4], ["1", "0", "0", "0"], "{dlq}");
    assert!(
        dlq.contains("READY: includes the dead letters of jobs (this is their dead-letter queue"),
        "{dlq}"
    );
    // A queue without a dead-letter queue keeps them itself.
    env.ok(&["queue", "create", "solo"]);
    assert!(env
        .ok(&["queue", "stats", "solo"])
        .contains("DEAD-LETTERED: messages of solo out of attempts, held dead in solo itself"));
    // Redrive off a terminal prints only its summary.
    assert_eq!(
        env.ok(&["queue", "redrive", "jobs.dlq"]),
        "moved 1 message from jobs.dlq\n"
    );
}

#[test]
fn pool_size_is_a_flag_with_bounds() {
    assert!(stdout_of(&["--help"]).contains("--pool-size <N>"));
    let out = pgbroker(&["--pool-size", "1", "topic", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2..=1000"),
        "{}",
        text(&out)
    );
}

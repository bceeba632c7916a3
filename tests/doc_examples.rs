//! The shell examples of the README and of `docs/`, run as written, so the
//! documentation cannot rot.
//!
//! Each Markdown file's ```sh blocks run in order, each in its own `bash`
//! (and then again in `zsh`, where it is installed; tests/run installs it),
//! against a fresh server (the real binary on an ephemeral port; the
//! examples' `http://127.0.0.1:2113` is rewritten to it) and, when the file
//! reads through Varnish (`127.0.0.1:6091`), a real Varnish in front of it.
//! `curl` is wrapped to record every status it gets: each must be 2xx or
//! 3xx unless the block announces it (`→ 404`), and each announced status
//! must occur. A block whose comments say `X-Cache: HIT` or `MISS` must
//! print those, in that order. A block marked `<!-- doc-test: skip (why) -->`
//! is not run; one marked `<!-- doc-test: background -->` (a follower that
//! never ends) runs beside the blocks after it and is stopped at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::BinaryServer;
use common::varnish::Varnish;

/// The address the examples use, and Varnish's.
const EXAMPLE_BASE: &str = "http://127.0.0.1:2113";
const EXAMPLE_VARNISH: &str = "http://127.0.0.1:6091";

/// The longest one block may take (the worked subscription example, with
/// its 30 appends and its wait, takes a few seconds).
const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Records the status of every request `curl` makes, whatever the example
/// does with stdout: in a file of its own for each call, since curls run
/// at once (background consumers) would interleave their lines in one.
const PRELUDE: &str = r#"curl() {
  local statuses
  statuses=$(mktemp "$DOC_TEST_STATUSES/curl.XXXXXX")
  command curl -w '%{stderr}DOC-TEST-STATUS %{http_code}\n' "$@" 2>"$statuses"
}
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Background,
    Skip,
}

#[derive(Debug)]
struct Block {
    /// `file:line` of the fence, for messages.
    place: String,
    code: String,
    mode: Mode,
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    files.insert(0, root.join("README.md"));
    files
}

/// The shell blocks of a Markdown file, with the mode their marker gives.
fn shell_blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut blocks = Vec::new();
    let mut previous = "";
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let fence = line.trim_start();
        if fence.starts_with("```") {
            let is_shell = matches!(fence.trim_start_matches('`'), "sh" | "bash" | "shell");
            let mut code = String::new();
            for (_, line) in lines.by_ref() {
                if line.trim_start().starts_with("```") {
                    break;
                }
                code.push_str(line);
                code.push('\n');
            }
            if is_shell {
                let mode = if previous.starts_with("<!-- doc-test: skip") {
                    Mode::Skip
                } else if previous.starts_with("<!-- doc-test: background") {
                    Mode::Background
                } else {
                    Mode::Run
                };
                blocks.push(Block { place: format!("{name}:{}", number + 1), code, mode });
            }
        }
        if !line.trim().is_empty() {
            previous = line.trim();
        }
    }
    blocks
}

/// The statuses a block announces with `→ NNN`.
fn announced_statuses(code: &str) -> Vec<u16> {
    code.split('→')
        .skip(1)
        .filter_map(|rest| rest.trim_start().get(..3).and_then(|digits| digits.parse().ok()))
        .collect()
}

/// The `X-Cache` values a block's comments promise, in order.
fn promised_cache_results(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| line.split_once("# X-Cache: ").map(|(_, rest)| rest.trim().to_ascii_uppercase()))
        .collect()
}

/// The shells the examples must run in: bash, and zsh where it is installed.
fn shells() -> Vec<&'static str> {
    let has_zsh = Command::new("zsh").args(["-c", "true"]).status().is_ok_and(|status| status.success());
    if has_zsh { vec!["bash", "zsh"] } else { vec!["bash"] }
}

/// Starts a block; its stdout, stderr and curl statuses go to files in a
/// directory of its own.
fn spawn_block(shell: &str, code: &str, dir: &Path) -> Child {
    std::fs::create_dir_all(dir.join("curl")).unwrap();
    let out = dir.join("out");
    let err = dir.join("err");
    Command::new(shell)
        .arg("-c")
        .arg(format!("{PRELUDE}{code}"))
        .env("DOC_TEST_STATUSES", dir.join("curl"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        // Its own process group, so that whatever it leaves running (a
        // follower, a background consumer) is stopped with it.
        .process_group(0)
        .spawn()
        .expect("the shell runs")
}

/// What every curl of a block wrote to stderr, its status lines included.
fn curl_output(dir: &Path) -> String {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir.join("curl")).unwrap().map(|entry| entry.unwrap().path()).collect();
    files.sort();
    files.iter().map(|file| std::fs::read_to_string(file).unwrap_or_default()).collect()
}

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}

/// Runs one file's blocks; returns every failure, described.
async fn run_document(shell: &str, path: &Path, blocks: &[Block]) -> Vec<String> {
    let data = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(data.path(), &["--durability", "none"]);
    let needs_varnish = blocks.iter().any(|b| b.mode != Mode::Skip && b.code.contains(EXAMPLE_VARNISH));
    let varnish = if needs_varnish { Some(Varnish::start(server.addr).await) } else { None };
    let work = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut background = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        if block.mode == Mode::Skip {
            continue;
        }
        let mut code = block.code.replace(EXAMPLE_BASE, &server.base);
        if let Some(varnish) = &varnish {
            code = code.replace(EXAMPLE_VARNISH, varnish.url("").trim_end_matches('/'));
        }
        let dir = work.path().join(index.to_string());
        let mut child = spawn_block(shell, &code, &dir);
        if block.mode == Mode::Background {
            background.push(child);
            // Let it connect before the next block appends.
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        kill_group(&mut child);
        let stdout = std::fs::read_to_string(dir.join("out")).unwrap_or_default();
        let stderr = std::fs::read_to_string(dir.join("err")).unwrap_or_default() + &curl_output(&dir);
        let context =
            format!("{} ({shell}):\n{}--- stdout:\n{stdout}--- stderr:\n{stderr}", block.place, block.code);
        match status {
            None => failures.push(format!("did not finish within {BLOCK_TIMEOUT:?}: {context}")),
            Some(status) if !status.success() => failures.push(format!("exited with {status}: {context}")),
            Some(_) => {}
        }
        let statuses: Vec<u16> = stderr
            .lines()
            .filter_map(|line| line.strip_prefix("DOC-TEST-STATUS "))
            .map(|code| code.trim().parse().unwrap_or(0))
            .collect();
        let announced = announced_statuses(&block.code);
        for status in &statuses {
            if !(200..400).contains(status) && !announced.contains(status) {
                failures
                    .push(format!("got {status}, which the block does not announce (→ {status}): {context}"));
            }
        }
        for status in &announced {
            if !statuses.contains(status) {
                failures.push(format!("announces {status} but got {statuses:?}: {context}"));
            }
        }
        let promised = promised_cache_results(&block.code);
        if !promised.is_empty() {
            let shown: Vec<String> = stdout
                .lines()
                .filter_map(|line| {
                    line.to_ascii_lowercase().strip_prefix("x-cache:").map(|v| v.trim().to_ascii_uppercase())
                })
                .collect();
            if shown != promised {
                failures.push(format!("promises X-Cache {promised:?} but shows {shown:?}: {context}"));
            }
        }
    }
    for mut child in background {
        kill_group(&mut child);
    }
    drop(varnish);
    if !failures.is_empty() {
        failures.insert(0, format!("in {}:", path.display()));
    }
    failures
}

#[tokio::test]
async fn every_shell_example_runs_as_written() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in documents() {
        let blocks = shell_blocks(&path);
        if blocks.iter().all(|block| block.mode == Mode::Skip) {
            continue;
        }
        ran += blocks.iter().filter(|block| block.mode != Mode::Skip).count();
        for shell in shells() {
            failures.extend(run_document(shell, &path, &blocks).await);
        }
    }
    assert!(ran >= 15, "only {ran} blocks found: is the parser still right?");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// zsh treats an unquoted `?`, `*` or `[` as a pattern and fails with "no
/// matches found", so every URL with one is quoted.
#[test]
fn urls_with_glob_characters_are_quoted() {
    let mut unquoted = Vec::new();
    for path in documents() {
        for block in shell_blocks(&path) {
            for line in block.code.lines() {
                let mut rest = line;
                while let Some(at) = rest.find("http") {
                    let before = rest[..at].chars().last();
                    let url: String = rest[at..].chars().take_while(|c| !c.is_whitespace()).collect();
                    let quoted = matches!(before, Some('\'' | '"'));
                    if !quoted && url.contains(['?', '*', '[']) {
                        unquoted.push(format!("{}: {url}", block.place));
                    }
                    rest = &rest[at + 4..];
                }
            }
        }
    }
    assert!(unquoted.is_empty(), "quote these URLs: {unquoted:#?}");
}

#[test]
fn the_markers_are_understood() {
    let blocks = shell_blocks(&Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    assert!(blocks.iter().any(|b| b.mode == Mode::Skip));
    assert!(blocks.iter().any(|b| b.mode == Mode::Background));
    assert_eq!(announced_statuses("x # → 201 Created\ny # → 404: gone"), vec![201, 404]);
    assert_eq!(promised_cache_results("a | grep x-cache   # X-Cache: HIT\n"), vec!["HIT"]);
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c.to_ascii_lowercase() })
        .collect()
}

fn anchors(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut in_code = false;
    let mut anchors = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            anchors.push(anchor(line));
        }
    }
    anchors
}

/// Every relative link of the README and docs/ leads to a file that
/// exists, and every `#anchor` to a heading there.
#[test]
fn every_relative_link_leads_somewhere() {
    let mut broken = Vec::new();
    for path in documents() {
        let text = std::fs::read_to_string(&path).unwrap();
        for target in text.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
            if target.starts_with("http") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let linked = if file.is_empty() { path.clone() } else { path.parent().unwrap().join(file) };
            if !linked.exists() {
                broken.push(format!("{}: {target}: no such file", path.display()));
            } else if !fragment.is_empty() && !anchors(&linked).iter().any(|a| a == fragment) {
                broken.push(format!("{}: {target}: no such heading", path.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

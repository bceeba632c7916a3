//! Rebuilds when a file of the web UI changes: `include_dir!` embeds
//! `static/` (src/http/ui.rs), and stable Rust cannot tell cargo which
//! files a macro read.

fn main() {
    println!("cargo:rerun-if-changed=static");
}

//! Replays every file of the committed corpus (`corpus/batches/`) through `check`'s judgement, on
//! the stable toolchain and without the fuzzer: `cargo test --manifest-path rust/fuzz/Cargo.toml`.
#[test]
fn the_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/batches");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("corpus/batches").map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    let mut failures = vec![];
    for path in &files {
        let data = std::fs::read(path).unwrap();
        if let Err(msg) = ltrcore_fuzz::judge(&data) {
            failures.push(format!("{}: {}", path.display(), msg.lines().next().unwrap_or("")));
        }
    }
    assert!(failures.is_empty(), "{} of {} corpus files fail:\n{}", failures.len(), files.len(), failures.join("\n"));
    println!("{} corpus files replayed", files.len());
}

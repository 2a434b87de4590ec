//! Runs `judge` over random byte strings (no fuzzer, stable toolchain) and tallies the verdicts:
//! `cargo run --release --example smoke -- [cases] [seed] [max_len]`. Failures are written to
//! `artifacts/smoke/` (one file per distinct first line of the message).
use std::collections::BTreeMap;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let mut state: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let max_len: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2_000);
    std::panic::set_hook(Box::new(|_| {}));
    let mut next = || ltrcore_fuzz::case::splitmix(&mut state);
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    std::fs::create_dir_all("artifacts/smoke").unwrap();
    for _ in 0..n {
        let len = (next() as usize) % max_len;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let verdict = std::panic::catch_unwind(|| ltrcore_fuzz::judge(&data));
        let key = match verdict {
            Ok(Ok(ltrcore_fuzz::Verdict::CleanError(why))) => {
                // Batch and row numbers dropped, so that the reasons tally up.
                let why: String = why.chars().filter(|c| !c.is_ascii_digit()).take(70).collect();
                format!("CleanError {why}")
            }
            Ok(Ok(v)) => format!("{v:?}"),
            Ok(Err(msg)) => {
                let first = msg.lines().next().unwrap_or("").chars().take(110).collect::<String>();
                if !tally.contains_key(&first) {
                    let path = format!("artifacts/smoke/fail-{}", tally.len());
                    std::fs::write(&path, &data).unwrap();
                    eprintln!("== {path}\n{msg}\n");
                }
                first
            }
            Err(p) => {
                let m = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                let first = format!("PANIC {}", m.chars().take(100).collect::<String>());
                if !tally.contains_key(&first) {
                    let path = format!("artifacts/smoke/fail-{}", tally.len());
                    std::fs::write(&path, &data).unwrap();
                    eprintln!("== {path}\n{m}\n");
                }
                first
            }
        };
        *tally.entry(key).or_default() += 1;
    }
    for (k, v) in &tally {
        println!("{v:8}  {k}");
    }
}

//! Writes a small seed corpus: random inputs, one per distinct combination of dtypes and options
//! the core ends up with a result for, and one per distinct clean error (at most `max` files):
//! `cargo run --release --example seed -- corpus/batches [max] [seed]`.
use std::collections::BTreeSet;

use ltrcore_fuzz::case::Case;
use ltrcore_fuzz::Verdict;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("a directory").clone();
    let max: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(80);
    let mut state: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(7);
    std::fs::create_dir_all(&dir).unwrap();
    let mut next = || ltrcore_fuzz::case::splitmix(&mut state);
    let mut seen = BTreeSet::new();
    let mut written = 0;
    for _ in 0..200_000 {
        if written >= max {
            break;
        }
        let len = 64 + (next() as usize) % 1_500;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let case = Case::generate(&data);
        let sig = match ltrcore_fuzz::judge(&data) {
            Ok(Verdict::Same) => format!(
                "ok {:?} {:?} {:?} {} {} {} {}",
                case.orders.user_t.family(),
                case.orders.ts_t,
                case.orders.amount_t,
                case.spec.period,
                case.signups.is_some(),
                case.activity.is_some(),
                case.spec.segment.is_some()
            ),
            Ok(Verdict::CleanError(why)) => format!("err {}", why.chars().filter(|c| !c.is_ascii_digit()).take(40).collect::<String>()),
            _ => continue,
        };
        if seen.insert(sig) {
            std::fs::write(format!("{dir}/seed-{written:03}"), &data).unwrap();
            written += 1;
        }
    }
    println!("{written} seeds in {dir}");
}

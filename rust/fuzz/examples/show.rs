//! Prints a fuzz input's case in full (spec, every table's rows and flags) and the verdict:
//! `cargo run --example show -- artifacts/batches/crash-…`.
fn main() {
    let path = std::env::args().nth(1).expect("a file");
    let data = std::fs::read(&path).unwrap();
    let case = ltrcore_fuzz::case::Case::generate(&data);
    println!("{}", ltrcore_fuzz::describe(&case));
    for t in [Some(&case.orders), case.signups.as_ref(), case.activity.as_ref()].into_iter().flatten() {
        println!("--- {:?} (schema {:?})", t.role, t.schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>());
        for (b, rows) in t.rows.iter().enumerate() {
            println!("  batch {b}: {:?}", t.flags[b]);
            for (i, r) in rows.iter().enumerate().take(80) {
                println!("    {i:4} {:?}", r);
            }
        }
    }
    match ltrcore_fuzz::judge(&data) {
        Ok(v) => println!("verdict: {v:?}"),
        Err(msg) => println!("FAILURE: {msg}"),
    }
}

//! Replays files or directories through a target's check, timing it:
//! `cargo run --release --example replay -- conn_ops DIR...`.
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("target");
    let mut files = Vec::new();
    for a in args {
        let p = std::path::PathBuf::from(a);
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                files.push(e.unwrap().path());
            }
        } else {
            files.push(p);
        }
    }
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed().as_secs_f64() < 5.0 {
        for i in &inputs {
            match target.as_str() {
                "conn_ops" => ringnats_fuzz::conn_ops::run(i),
                _ => ringnats_fuzz::sublist_ops::run(i),
            }
            n += 1;
        }
    }
    println!(
        "{n} runs in {:?}: {:.0}/s",
        t.elapsed(),
        n as f64 / t.elapsed().as_secs_f64()
    );
}

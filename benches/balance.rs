//! Backend picks per second from 1 and 2 threads (run with `cargo bench --bench balance`): every request makes
//! one, so what one pick costs, and whether picks on different cores slow each other (a shared lock's counter
//! would: one cache line that every core writes).

use rattan::marathon::address::Endpoint;
use rattan::proxy::balance::Balancer;
use rattan::rules::table::Balance;
use std::time::Instant;

const PICKS: usize = 2_000_000;

fn run(b: &Balancer, backends: &[Endpoint], policy: Balance, threads: usize) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..PICKS {
                    let picked = b.pick("/bench", 0, policy, backends, &[]);
                    std::hint::black_box(picked);
                }
            });
        }
    });
    t.elapsed().as_nanos() as f64 / PICKS as f64
}

fn main() {
    let backends: Vec<Endpoint> = (0..4)
        .map(|i| Endpoint {
            host: format!("10.0.0.{i}").into(),
            port: 31000,
        })
        .collect();
    let b = Balancer::default();
    println!("policy      threads  ns per pick (per thread)");
    for (name, policy) in [
        ("leastconn", Balance::Leastconn),
        ("roundrobin", Balance::Roundrobin),
    ] {
        for threads in [1, 2] {
            run(&b, &backends, policy, threads);
            println!(
                "{name:<11} {threads:>7}  {:>8.1}",
                run(&b, &backends, policy, threads)
            );
        }
    }
}

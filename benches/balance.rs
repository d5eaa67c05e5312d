//! What every request costs in shared state, from 1 and 2 threads (run with `cargo bench --bench balance`): a
//! backend pick, and the request metrics (in flight up and down, count and duration by app). Whether requests on
//! different cores slow each other: a lock's counter, or one counter per app, is a cache line every core writes.

use rattan::marathon::address::Endpoint;
use rattan::metrics::{metrics, AppMetrics};
use rattan::proxy::balance::Balancer;
use rattan::rules::table::Balance;
use std::time::{Duration, Instant};

const PICKS: usize = 2_000_000;

/// ns per call of `each` (per thread), with `threads` threads calling it `PICKS` times at once.
fn per_thread(threads: usize, each: impl Fn(usize) + Sync) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| (0..PICKS).for_each(&each));
        }
    });
    t.elapsed().as_nanos() as f64 / PICKS as f64
}

fn run(b: &Balancer, backends: &[Endpoint], policy: Balance, threads: usize) -> f64 {
    per_thread(threads, |_| {
        std::hint::black_box(b.pick("/bench", 0, (policy, None), backends, &[]));
    })
}

fn record(threads: usize) -> f64 {
    let app = AppMetrics::for_app("/bench");
    let m = metrics();
    per_thread(threads, |i| {
        m.http_in_flight.inc();
        app.record(0, 200, Duration::from_micros((i % 700) as u64), 0);
        m.http_in_flight.dec();
    })
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
    println!("request metrics  threads  ns per request (per thread)");
    for threads in [1, 2] {
        record(threads);
        println!("{:<16} {threads:>7}  {:>8.1}", "", record(threads));
    }
}

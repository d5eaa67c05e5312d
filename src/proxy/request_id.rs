//! `X-Request-Id` values for requests that come without one: 16 hex digits, unique per process run with
//! overwhelming likelihood, made without a lock or a system call (a per-thread counter through a mixer).

use std::cell::Cell;

thread_local! {
    static NEXT: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use rand::RngCore;
    rand::thread_rng().next_u64()
}

/// SplitMix64's output function: consecutive counters give unrelated-looking ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn make() -> [u8; 16] {
    let n = NEXT.with(|c| {
        let v = c.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        c.set(v);
        v
    });
    let v = mix(n);
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_hex_and_distinct() {
        let ids: std::collections::HashSet<[u8; 16]> = (0..10_000).map(|_| super::make()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.iter().all(u8::is_ascii_hexdigit)));
    }
}

//! Where a PFX download's CPU goes (issue 7, part 2c): the cost of building one PFX (which
//! includes parsing it back) in both encryption modes, and of opening one, on one core.
//!
//! `cargo run --release -p certkeep-bench --bin pfx_cost`

use std::time::Instant;

use certkeep_api_types::agent::PfxEncryption;
use certkeep_api_types::pfx::testing::{KeyKind, TestCa};
use certkeep_api_types::pfx::{build_pfx, open_pfx};
use certkeep_bench::procfs;

const PASSWORD: &str = "bench ccs password";

fn main() -> anyhow::Result<()> {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    println!(
        "machine: {}; {iterations} iterations each, one thread",
        procfs::machine()
    );
    let ca = TestCa::new();
    for kind in [KeyKind::Ecdsa, KeyKind::Rsa] {
        let leaf = ca.leaf(&["bench.example.com", "www.bench.example.com"], kind);
        for (name, mode) in [
            ("legacy 3DES/SHA-1", PfxEncryption::Legacy),
            ("AES-256/SHA-256", PfxEncryption::Aes256),
        ] {
            let t = Instant::now();
            let mut pfx = Vec::new();
            for _ in 0..iterations {
                pfx = build_pfx(&leaf.key_pkcs8_der, &leaf.chain_der, PASSWORD, mode)?;
            }
            let build = t.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
            let t = Instant::now();
            for _ in 0..iterations {
                open_pfx(&pfx, PASSWORD)?;
            }
            let open = t.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
            println!(
                "{kind:?} {name}: build_pfx {build:.0} us (includes one open_pfx check), open_pfx {open:.0} us, {} bytes",
                pfx.len()
            );
        }
    }
    Ok(())
}

//! The cache's memory tier, chosen by measurement: TinyUFO (the `tinyufo` crate,
//! what `crates/edge/src/cache/store.rs` uses) against foyer's in-memory cache
//! (`foyer-memory`, its default w-TinyLFU and its S3-FIFO), at the same byte budget.
//!
//! `tinyufo` admits by TinyLFU (`put`, the edge with a disk tier), `tinyufo_force`
//! admits every fill (`force_put`, the edge with the memory tier alone).
//!
//! - `memory_tier/get_hit/*`: one lookup of an object that is in the cache (cycling
//!   through 4096 of them), the cost every cache hit pays.
//! - `memory_tier/replay/*`: a video edge's request trace replayed on a warm cache,
//!   20,000 requests per iteration, each a lookup and, on a miss, an insert (with the
//!   evictions it causes).
//!
//! The trace: 50,000 objects, one in ten a 2 KiB playlist, the others 512 KiB,
//! 1 MiB or 2 MiB segments; three requests in four go to them by popularity (Zipf,
//! s = 0.9), one in four to an object asked once and never again (a scan: the long
//! tail, a crawler). The budget is a tenth of the 50,000 objects' bytes. The
//! request and byte hit ratios of each library over 400,000 requests are printed
//! and written to `target/criterion/notes/` for the report: what the tier is for.
//!
//! Run: `cargo bench -p stile-benches --bench memory_tier` (or `scripts/bench-micro`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use foyer_memory::{Cache, LfuConfig, S3FifoConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tinyufo::TinyUfo;

/// Bytes per unit of weight, as the edge's memory tier counts.
const PAGE: u64 = 4096;
const OBJECTS: u64 = 50_000;
const TRACE: usize = 400_000;
const WINDOW: usize = 20_000;

/// One cached object, as the tiers hold the edge's `Arc<Object>`.
struct Obj {
    pages: u16,
}

/// What the benchmark asks of a memory tier.
trait Tier {
    fn get(&self, key: u64) -> bool;
    fn put(&self, key: u64, pages: u16);
}

/// TinyUFO, admitting by TinyLFU (`put`: the edge with a disk tier) or admitting
/// every fill (`force_put`: the edge with the memory tier alone).
struct Ufo(TinyUfo<u64, Arc<Obj>>, bool);

impl Tier for Ufo {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn put(&self, key: u64, pages: u16) {
        let obj = Arc::new(Obj { pages });
        black_box(if self.1 { self.0.force_put(key, obj, pages) } else { self.0.put(key, obj, pages) });
    }
}

struct Foyer(Cache<u64, Arc<Obj>>);

impl Tier for Foyer {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn put(&self, key: u64, pages: u16) {
        black_box(self.0.insert(key, Arc::new(Obj { pages })));
    }
}

fn tiers(budget_pages: u64) -> Vec<(&'static str, Box<dyn Tier>)> {
    let pages = usize::try_from(budget_pages).unwrap();
    // As the edge sizes TinyUFO: an estimate of the objects it will hold.
    let ufo = || TinyUfo::new(pages, (pages / 64).max(1024));
    let foyer = |eviction: foyer_memory::EvictionConfig| {
        Cache::builder(pages)
            .with_weighter(|_k: &u64, v: &Arc<Obj>| usize::from(v.pages))
            .with_eviction_config(eviction)
            .build()
    };
    vec![
        ("tinyufo", Box::new(Ufo(ufo(), false)) as Box<dyn Tier>),
        ("tinyufo_force", Box::new(Ufo(ufo(), true))),
        ("foyer_wtinylfu", Box::new(Foyer(foyer(LfuConfig::default().into())))),
        ("foyer_s3fifo", Box::new(Foyer(foyer(S3FifoConfig::default().into())))),
    ]
}

/// The weight of object `key` in pages: one in ten a 2 KiB playlist (one page),
/// the others 512 KiB, 1 MiB or 2 MiB.
fn pages_of(key: u64) -> u16 {
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    if h.is_multiple_of(10) {
        return 1;
    }
    [128, 256, 512][(h % 3) as usize]
}

/// The request trace (keys; scan keys are above `OBJECTS`) and the budget in pages.
fn trace() -> (Vec<u64>, u64) {
    let mut cdf = Vec::with_capacity(OBJECTS as usize);
    let mut sum = 0.0;
    for rank in 1..=OBJECTS {
        sum += 1.0 / (rank as f64).powf(0.9);
        cdf.push(sum);
    }
    let mut rng = StdRng::seed_from_u64(7);
    let mut next_scan = OBJECTS;
    let keys = (0..TRACE)
        .map(|_| {
            if rng.random_range(0..4) == 0 {
                next_scan += 1;
                next_scan
            } else {
                let u = rng.random::<f64>() * sum;
                cdf.partition_point(|&c| c < u) as u64
            }
        })
        .collect();
    let population: u64 = (0..OBJECTS).map(|k| u64::from(pages_of(k))).sum();
    (keys, population / 10)
}

/// Replays `keys`: hit or insert. Returns (requests hit, bytes hit, bytes asked).
fn replay(tier: &dyn Tier, keys: &[u64]) -> (u64, u64, u64) {
    let (mut hits, mut hit_bytes, mut bytes) = (0, 0, 0);
    for &k in keys {
        let b = u64::from(pages_of(k)) * PAGE;
        bytes += b;
        if tier.get(k) {
            hits += 1;
            hit_bytes += b;
        } else {
            tier.put(k, pages_of(k));
        }
    }
    (hits, hit_bytes, bytes)
}

fn bench_memory_tier(c: &mut Criterion) {
    let (keys, budget) = trace();
    let mut note = format!(
        "Memory tier on a video trace (`benches/memory_tier.rs`): {OBJECTS} objects, {TRACE} requests \
         (3 in 4 Zipf s = 0.9, 1 in 4 a scan), budget {} MiB (a tenth of the objects' bytes); \
         hit ratios over the whole trace from a cold start:\n\n\
         | library | request hit ratio | byte hit ratio |\n|---|---|---|\n",
        (budget * PAGE) >> 20
    );
    for (name, tier) in tiers(budget) {
        let (hits, hit_bytes, bytes) = replay(tier.as_ref(), &keys);
        let line = format!(
            "| `{name}` | {:.1} % | {:.1} % |",
            hits as f64 * 100.0 / keys.len() as f64,
            hit_bytes as f64 * 100.0 / bytes as f64
        );
        println!("{line}");
        note.push_str(&line);
        note.push('\n');
    }
    stile_benches::write_note("memory_tier.md", &note);

    let mut g = c.benchmark_group("memory_tier");
    for (name, tier) in tiers(budget) {
        // Small objects, all of which fit: every lookup below is a hit.
        let present: Vec<u64> = (0..4096).collect();
        for &k in &present {
            tier.put(k, 1);
        }
        assert!(present.iter().all(|&k| tier.get(k)), "{name}: the 4096 objects are not all held");
        let mut i = 0;
        g.bench_function(format!("get_hit/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(tier.get(black_box(present[i])))
            })
        });
    }
    g.throughput(Throughput::Elements(WINDOW as u64));
    for (name, tier) in tiers(budget) {
        replay(tier.as_ref(), &keys[..TRACE / 2]);
        let mut at = TRACE / 2;
        g.bench_function(format!("replay/{name}"), |b| {
            b.iter(|| {
                if at + WINDOW > keys.len() {
                    at = TRACE / 2;
                }
                let r = replay(tier.as_ref(), &keys[at..at + WINDOW]);
                at += WINDOW;
                black_box(r)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_memory_tier);
criterion_main!(benches);

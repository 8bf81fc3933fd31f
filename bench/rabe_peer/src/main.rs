//! rabe 0.4.2 peer rows for bench/abe_bench.py: one JSON line per (scheme, op, n).
//!
//! Shape (same as ehr-abe's "ma" rows): two authorities, n attributes split
//! between them (first half to authority 1), policy = AND of all n attributes,
//! keygen summed over both authorities, decrypt with a key holding all n.
//! Usage: rabe_peer [--sizes 2,5,10] [--runs 7]
//! Timings: median of `runs` after one untimed warm-up (rabe caches nothing).
//! rabe's encrypt/decrypt include AES-GCM of a 32-byte payload (negligible).
use rabe::schemes::{aw11, bdabe};
use rabe::utils::policy::pest::PolicyLanguage;
use std::time::Instant;

fn median_ms(mut f: impl FnMut(), runs: usize) -> (f64, f64, f64) {
    f();
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[v.len() / 10], v[(v.len() * 9) / 10])
}

fn emit(scheme: &str, op: &str, n: usize, runs: usize, t: (f64, f64, f64)) {
    println!(
        "{{\"peer\": \"rabe-0.4.2\", \"scheme\": \"{}\", \"op\": \"{}\", \"n_attrs\": {}, \"ms\": {:.3}, \"p10_ms\": {:.3}, \"p90_ms\": {:.3}, \"runs\": {}, \"curve\": \"BN254\"}}",
        scheme, op, n, t.0, t.1, t.2, runs
    );
}

/// rabe's JSON policies take binary `and` gates only: a right-leaning chain.
fn and_policy(attrs: &[String]) -> String {
    if attrs.len() == 1 {
        return format!("{{\"name\": \"{}\"}}", attrs[0]);
    }
    format!(
        "{{\"name\": \"and\", \"children\": [{{\"name\": \"{}\"}}, {}]}}",
        attrs[0],
        and_policy(&attrs[1..])
    )
}

/// bdabe's DNF policies want one flat `and` of leaves.
fn flat_and_policy(attrs: &[String]) -> String {
    let children: Vec<String> = attrs.iter().map(|a| format!("{{\"name\": \"{}\"}}", a)).collect();
    format!("{{\"name\": \"and\", \"children\": [{}]}}", children.join(", "))
}

fn bench_aw11(n: usize, runs: usize) {
    let gk = aw11::setup();
    let a1: Vec<String> = (0..(n + 1) / 2).map(|i| format!("A{:02}", i)).collect();
    let a2: Vec<String> = ((n + 1) / 2..n).map(|i| format!("A{:02}", i)).collect();
    let r1: Vec<&str> = a1.iter().map(|s| s.as_str()).collect();
    let r2: Vec<&str> = a2.iter().map(|s| s.as_str()).collect();
    let (pk1, msk1) = aw11::authgen(&gk, &r1).unwrap();
    let (pk2, msk2) = aw11::authgen(&gk, &r2).unwrap();
    let all: Vec<String> = a1.iter().chain(a2.iter()).cloned().collect();
    let policy = and_policy(&all);
    let keygen = || {
        let mut sk = aw11::keygen(&gk, &msk1, "bob", &r1).unwrap();
        for a in &r2 {
            aw11::add_to_attribute(&gk, &msk2, a, &mut sk).unwrap();
        }
        sk
    };
    let sk = keygen();
    let pks = vec![&pk1, &pk2];
    let data = vec![7u8; 32];
    let ct = aw11::encrypt(&gk, &pks, &policy, PolicyLanguage::JsonPolicy, &data).unwrap();
    assert_eq!(aw11::decrypt(&gk, &sk, &ct).unwrap(), data);
    emit("aw11", "keygen", n, runs, median_ms(|| { keygen(); }, runs));
    emit("aw11", "encrypt", n, runs, median_ms(|| { aw11::encrypt(&gk, &pks, &policy, PolicyLanguage::JsonPolicy, &data).unwrap(); }, runs));
    emit("aw11", "decrypt", n, runs, median_ms(|| { aw11::decrypt(&gk, &sk, &ct).unwrap(); }, runs));
}

fn bench_bdabe(n: usize, runs: usize) {
    let (pk, msk) = bdabe::setup();
    let auth1 = bdabe::authgen(&pk, &msk, "aa1");
    let auth2 = bdabe::authgen(&pk, &msk, "aa2");
    let attrs: Vec<(String, usize)> = (0..n)
        .map(|i| if i < (n + 1) / 2 { (format!("aa1::A{:02}", i), 1) } else { (format!("aa2::A{:02}", i), 2) })
        .collect();
    let auth = |w: usize| if w == 1 { &auth1 } else { &auth2 };
    let attr_pks: Vec<bdabe::BdabePublicAttributeKey> = attrs
        .iter()
        .map(|(a, w)| bdabe::request_attribute_pk(&pk, auth(*w), a).unwrap())
        .collect();
    let names: Vec<String> = attrs.iter().map(|(a, _)| a.clone()).collect();
    let policy = flat_and_policy(&names);
    // keygen summed over authorities: the user key (from authority 1) and every
    // attribute secret key from its authority.
    let keygen = || {
        let mut sk = bdabe::keygen(&pk, &auth1, "u1");
        for (a, w) in &attrs {
            let part = bdabe::request_attribute_sk(&sk.pk, auth(*w), a).unwrap();
            sk.sk_a.push(part);
        }
        sk
    };
    let sk = keygen();
    let refs: Vec<&bdabe::BdabePublicAttributeKey> = attr_pks.iter().collect();
    let data = vec![7u8; 32];
    let ct = bdabe::encrypt(&pk, &refs, &policy, PolicyLanguage::JsonPolicy, &data).unwrap();
    assert_eq!(bdabe::decrypt(&sk, &ct).unwrap(), data);
    emit("bdabe", "keygen", n, runs, median_ms(|| { keygen(); }, runs));
    emit("bdabe", "encrypt", n, runs, median_ms(|| { bdabe::encrypt(&pk, &refs, &policy, PolicyLanguage::JsonPolicy, &data).unwrap(); }, runs));
    emit("bdabe", "decrypt", n, runs, median_ms(|| { bdabe::decrypt(&sk, &ct).unwrap(); }, runs));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut sizes = vec![2usize, 5, 10, 20, 50];
    let mut runs = 7usize;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--sizes" => { sizes = args[i + 1].split(',').map(|s| s.trim().parse().expect("size")).collect(); i += 2; }
            "--runs" => { runs = args[i + 1].parse().expect("runs"); i += 2; }
            other => { eprintln!("unknown argument {}", other); std::process::exit(2); }
        }
    }
    for &n in &sizes {
        let r = if n >= 50 { (runs / 3).max(3) } else { runs };
        bench_aw11(n, r);
        bench_bdabe(n, r);
    }
}

//! rabe 0.4.2 peer rows for bench/abe_bench.py: one JSON line per (scheme, op, n).
//!
//! Shape (same as ehr-abe's "ma" rows): two authorities, n attributes split
//! between them (first half to authority 1), policy = AND of all n attributes,
//! keygen summed over both authorities, decrypt with a key holding all n.
//! Usage: rabe_peer [--sizes 2,5,10] [--runs 7]     (JSON lines: medians after one warm-up)
//!        rabe_peer --serve                          (one sample per request: see serve())
//! rabe's encrypt/decrypt include AES-GCM of a 32-byte payload (negligible).
use rabe::schemes::{aw11, bdabe};
use rabe::utils::policy::pest::PolicyLanguage;
use std::time::Instant;

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

struct Aw11Shape {
    gk: aw11::Aw11GlobalKey,
    pk1: aw11::Aw11PublicKey,
    pk2: aw11::Aw11PublicKey,
    msk1: aw11::Aw11MasterKey,
    msk2: aw11::Aw11MasterKey,
    a1: Vec<String>,
    a2: Vec<String>,
    policy: String,
    sk: Option<aw11::Aw11SecretKey>,
    ct: Option<aw11::Aw11Ciphertext>,
}

impl Aw11Shape {
    fn new(n: usize) -> Self {
        let gk = aw11::setup();
        let a1: Vec<String> = (0..(n + 1) / 2).map(|i| format!("A{:02}", i)).collect();
        let a2: Vec<String> = ((n + 1) / 2..n).map(|i| format!("A{:02}", i)).collect();
        let r1: Vec<&str> = a1.iter().map(|s| s.as_str()).collect();
        let r2: Vec<&str> = a2.iter().map(|s| s.as_str()).collect();
        let (pk1, msk1) = aw11::authgen(&gk, &r1).unwrap();
        // an authority needs at least one attribute: n = 1 gives authority 2 a spare one
        let (pk2, msk2) = aw11::authgen(&gk, if r2.is_empty() { &["SPARE"] } else { &r2 }).unwrap();
        let all: Vec<String> = a1.iter().chain(a2.iter()).cloned().collect();
        let policy = and_policy(&all);
        let mut shape = Aw11Shape { gk, pk1, pk2, msk1, msk2, a1, a2, policy, sk: None, ct: None };
        shape.sk = Some(shape.keygen());
        shape.ct = Some(shape.encrypt());
        assert_eq!(aw11::decrypt(&shape.gk, shape.sk.as_ref().unwrap(), shape.ct.as_ref().unwrap()).unwrap(), PAYLOAD.to_vec());
        shape
    }
    fn keygen(&self) -> aw11::Aw11SecretKey {
        let r1: Vec<&str> = self.a1.iter().map(|s| s.as_str()).collect();
        let mut sk = aw11::keygen(&self.gk, &self.msk1, "bob", &r1).unwrap();
        for a in &self.a2 {
            aw11::add_to_attribute(&self.gk, &self.msk2, a, &mut sk).unwrap();
        }
        sk
    }
    fn encrypt(&self) -> aw11::Aw11Ciphertext {
        let pks = vec![&self.pk1, &self.pk2];
        aw11::encrypt(&self.gk, &pks, &self.policy, PolicyLanguage::JsonPolicy, PAYLOAD).unwrap()
    }
    fn decrypt(&self) {
        aw11::decrypt(&self.gk, self.sk.as_ref().unwrap(), self.ct.as_ref().unwrap()).unwrap();
    }
}

struct BdabeShape {
    pk: bdabe::BdabePublicKey,
    auth1: bdabe::BdabeSecretAuthorityKey,
    auth2: bdabe::BdabeSecretAuthorityKey,
    attrs: Vec<(String, usize)>,
    attr_pks: Vec<bdabe::BdabePublicAttributeKey>,
    policy: String,
    sk: Option<bdabe::BdabeUserKey>,
    ct: Option<bdabe::BdabeCiphertext>,
}

impl BdabeShape {
    fn new(n: usize) -> Self {
        let (pk, msk) = bdabe::setup();
        let auth1 = bdabe::authgen(&pk, &msk, "aa1");
        let auth2 = bdabe::authgen(&pk, &msk, "aa2");
        let attrs: Vec<(String, usize)> = (0..n)
            .map(|i| if i < (n + 1) / 2 { (format!("aa1::A{:02}", i), 1) } else { (format!("aa2::A{:02}", i), 2) })
            .collect();
        let attr_pks: Vec<bdabe::BdabePublicAttributeKey> = attrs
            .iter()
            .map(|(a, w)| bdabe::request_attribute_pk(&pk, if *w == 1 { &auth1 } else { &auth2 }, a).unwrap())
            .collect();
        let names: Vec<String> = attrs.iter().map(|(a, _)| a.clone()).collect();
        let policy = flat_and_policy(&names);
        let mut shape = BdabeShape { pk, auth1, auth2, attrs, attr_pks, policy, sk: None, ct: None };
        shape.sk = Some(shape.keygen());
        shape.ct = Some(shape.encrypt());
        assert_eq!(bdabe::decrypt(shape.sk.as_ref().unwrap(), shape.ct.as_ref().unwrap()).unwrap(), PAYLOAD.to_vec());
        shape
    }
    /// keygen summed over authorities: the user key (from authority 1) and every
    /// attribute secret key from its authority.
    fn keygen(&self) -> bdabe::BdabeUserKey {
        let mut sk = bdabe::keygen(&self.pk, &self.auth1, "u1");
        for (a, w) in &self.attrs {
            let auth = if *w == 1 { &self.auth1 } else { &self.auth2 };
            let part = bdabe::request_attribute_sk(&sk.pk, auth, a).unwrap();
            sk.sk_a.push(part);
        }
        sk
    }
    fn encrypt(&self) -> bdabe::BdabeCiphertext {
        let refs: Vec<&bdabe::BdabePublicAttributeKey> = self.attr_pks.iter().collect();
        bdabe::encrypt(&self.pk, &refs, &self.policy, PolicyLanguage::JsonPolicy, PAYLOAD).unwrap()
    }
    fn decrypt(&self) {
        bdabe::decrypt(self.sk.as_ref().unwrap(), self.ct.as_ref().unwrap()).unwrap();
    }
}

const PAYLOAD: &[u8] = &[7u8; 32];

fn once_ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1000.0
}

fn sample(aw: &Aw11Shape, bd: &BdabeShape, scheme: &str, op: &str) -> f64 {
    match (scheme, op) {
        ("aw11", "keygen") => once_ms(|| { aw.keygen(); }),
        ("aw11", "encrypt") => once_ms(|| { aw.encrypt(); }),
        ("aw11", "decrypt") => once_ms(|| aw.decrypt()),
        ("bdabe", "keygen") => once_ms(|| { bd.keygen(); }),
        ("bdabe", "encrypt") => once_ms(|| { bd.encrypt(); }),
        ("bdabe", "decrypt") => once_ms(|| bd.decrypt()),
        _ => -1.0,
    }
}

/// `--serve`: one command per stdin line, one answer per stdout line, so the caller
/// can interleave rabe's samples with its own (both see the same machine load):
///   shape <n>              -> {"ready": n}
///   time <scheme> <op>     -> one sample in ms
fn serve() {
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut shapes: Option<(Aw11Shape, BdabeShape)> = None;
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["shape", n] => {
                let n: usize = n.parse().expect("n");
                shapes = Some((Aw11Shape::new(n), BdabeShape::new(n)));
                writeln!(out, "{{\"ready\": {}}}", n).unwrap();
            }
            ["time", scheme, op] => {
                let (aw, bd) = shapes.as_ref().expect("shape first");
                writeln!(out, "{:.4}", sample(aw, bd, scheme, op)).unwrap();
            }
            [] => continue,
            _ => { writeln!(out, "error").unwrap(); }
        }
        out.flush().unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut sizes = vec![2usize, 5, 10, 20, 50];
    let mut runs = 7usize;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--serve" => { serve(); return; }
            "--sizes" => { sizes = args[i + 1].split(',').map(|s| s.trim().parse().expect("size")).collect(); i += 2; }
            "--runs" => { runs = args[i + 1].parse().expect("runs"); i += 2; }
            other => { eprintln!("unknown argument {}", other); std::process::exit(2); }
        }
    }
    for &n in &sizes {
        let r = if n >= 50 { (runs / 3).max(3) } else { runs };
        let aw = Aw11Shape::new(n);
        let bd = BdabeShape::new(n);
        for scheme in ["aw11", "bdabe"] {
            for op in ["keygen", "encrypt", "decrypt"] {
                sample(&aw, &bd, scheme, op); // warm-up
                let mut v: Vec<f64> = (0..r).map(|_| sample(&aw, &bd, scheme, op)).collect();
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                emit(scheme, op, n, r, (v[v.len() / 2], v[v.len() / 10], v[(v.len() * 9) / 10]));
            }
        }
    }
}

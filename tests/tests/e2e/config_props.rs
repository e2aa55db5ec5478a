//! The configuration files' properties (tests/fuzz/config/props.rs) in
//! every `cargo test`: each committed seed of the config fuzz targets (the
//! annotated examples, inputs that once failed), and seeded mutations of
//! them that an operator's or a merge's mistakes look like: bytes flipped,
//! lines dropped or doubled, values swapped for hostile ones, text cut
//! short. The cargo-fuzz targets (tests/fuzz/config/run) search further.

use std::path::Path;

#[path = "../../fuzz/config/props.rs"]
mod props;

/// Mutations per seed.
const ROUNDS: usize = 400;

use stamp_tests::Xorshift as Rng;

const HOSTILE: &[&str] = &[
    "\"\"",
    "\"\\u0000\"",
    "\"\\r\\n\"",
    "\"../../../etc\"",
    "\"C:\\\\work\\\\shop\"",
    "\"\\\\\\\\server\\\\share\"",
    "\"/abs\"",
    "\"\\u202e.js\"",
    "-1",
    "1e400",
    "18446744073709551616",
    "[]",
    "{}",
    "true",
    "\"http://[::1\"",
    "\"a\\tb\"",
];

fn mutate(seed: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = seed.lines().map(str::to_string).collect();
    for _ in 0..=rng.below(3) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = rng.below(lines.len());
        match rng.below(6) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                // A value swapped for a hostile one.
                if let Some((k, _)) = lines[i].split_once('=') {
                    let v = HOSTILE[rng.below(HOSTILE.len())];
                    lines[i] = format!("{k}= {v}");
                }
            }
            3 => {
                // A byte flipped (kept only if still UTF-8).
                let mut b = lines[i].clone().into_bytes();
                if !b.is_empty() {
                    let j = rng.below(b.len());
                    b[j] ^= 1 << rng.below(8);
                }
                if let Ok(s) = String::from_utf8(b) {
                    lines[i] = s;
                }
            }
            4 => {
                let cut = rng.below(lines[i].len() + 1);
                if lines[i].is_char_boundary(cut) {
                    lines[i].truncate(cut);
                }
            }
            _ => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
        }
    }
    lines.join("\n")
}

fn replay(target: &str, check: fn(&str)) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/config/corpus")
        .join(target);
    let mut seeds = 0;
    let mut rng = Rng(0x5eed_u64 ^ target.len() as u64);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let Ok(seed) = std::fs::read_to_string(&path) else {
            continue; // not UTF-8: the fuzz targets skip it too
        };
        seeds += 1;
        check(&seed);
        for round in 0..ROUNDS {
            let text = mutate(&seed, &mut rng);
            let caught = std::panic::catch_unwind(|| check(&text));
            assert!(
                caught.is_ok(),
                "{target}: {} mutation {round} broke a property; the input:\n{text}",
                path.display()
            );
        }
    }
    assert!(seeds >= 2, "{target}: no seeds in {}", dir.display());
}

#[test]
fn the_proxys_configuration_file_holds_its_properties() {
    replay("proxy_toml", props::proxy_toml);
}

#[test]
fn the_clis_settings_files_hold_their_properties() {
    replay("stamp_toml", props::stamp_toml);
}

#[test]
fn a_rails_apps_importmap_rb_holds_its_properties() {
    replay("importmap_rb", props::importmap_rb);
}

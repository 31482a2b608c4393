//! The fuzz targets' smoke test on stable Rust: every entry point of `sigmirror::fuzzing` runs
//! over every committed seed in `fuzz/corpus/<target>/` and every crash input in
//! `fuzz/regressions/<target>/`, so the targets build and their inputs stay harmless on every
//! `cargo test`, without nightly or libFuzzer. A panic here is a crash the fuzzer found (or would).

use std::path::{Path, PathBuf};

use sigmirror::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted; none when the directory does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else { return Vec::new() };
    let mut files: Vec<PathBuf> = dir.map(|e| e.expect("directory entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_target_survives_its_whole_seed_corpus() {
    for (name, entry) in TARGETS {
        let seeds = inputs("corpus", name);
        assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seeds: run python3 fuzz/seeds.py");
        for file in seeds {
            entry(&std::fs::read(&file).expect("readable seed"));
        }
    }
}

#[test]
fn every_regression_input_is_harmless() {
    for (name, entry) in TARGETS {
        for file in inputs("regressions", name) {
            entry(&std::fs::read(&file).expect("readable regression"));
        }
    }
}

#[test]
fn every_entry_point_has_a_fuzz_target_and_every_corpus_an_entry_point() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no [[bin]] {name}");
        let shim = std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{name}.rs: {e}"));
        assert!(shim.contains("sigmirror::fuzzing::"), "fuzz/fuzz_targets/{name}.rs calls no entry point");
    }
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind)) else { continue };
        for e in dir {
            let dir_name = e.expect("directory entry").file_name().into_string().expect("UTF-8 name");
            assert!(TARGETS.iter().any(|(n, _)| *n == dir_name), "fuzz/{kind}/{dir_name} names no target");
        }
    }
}

/// Empty and tiny inputs are where parsers index past the end.
#[test]
fn every_target_survives_empty_and_one_byte_inputs() {
    for (_, entry) in TARGETS {
        entry(b"");
        for b in [0u8, 0x30, b'{', b'[', 0xff, 0xd2, 0x84] {
            entry(&[b]);
        }
    }
}

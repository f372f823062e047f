//! The newc writer and reader against GNU cpio (Debian package cpio, installed by
//! scripts/setup.sh), on random trees: GNU cpio extracts our archives to the same tree,
//! and our reader reads GNU cpio's archive of that tree to the same entries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use cocos_hal::cpio::{read, Archive, Kind};

/// A small deterministic generator (xorshift), so the test needs no rand crate.
struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (xorshift's state must not be 0).
    fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random tree: (path, mode, kind) without device nodes (extracting those needs root).
fn random_tree(rng: &mut Rng) -> BTreeMap<String, (u32, Kind)> {
    let names = [
        "bin", "etc", "lib", "usr", "init", "a b", "ü", "x.conf", "modules", "z",
    ];
    let mut t = BTreeMap::new();
    for _ in 0..rng.below(40) + 1 {
        let depth = rng.below(3) + 1;
        let path: Vec<&str> = (0..depth)
            .map(|_| names[rng.below(names.len() as u64) as usize])
            .collect();
        let path = path.join("/");
        // Skip paths that clash with an existing file used as a directory or vice versa.
        let clash = t.keys().any(|k: &String| {
            (path.starts_with(&format!("{k}/")) && !matches!(t[k], (_, Kind::Dir)))
                || k.starts_with(&format!("{path}/"))
        });
        if clash || t.contains_key(&path) {
            continue;
        }
        let kind = match rng.below(5) {
            0 => Kind::Dir,
            1 => Kind::Symlink(format!("target-{}", rng.below(100))),
            _ => Kind::File((0..rng.below(3000)).map(|_| rng.next() as u8).collect()),
        };
        let mode = match &kind {
            Kind::Dir => 0o755,
            Kind::Symlink(_) => 0o777,
            _ => [0o644, 0o755, 0o600, 0o444][rng.below(4) as usize],
        };
        t.insert(path, (mode, kind));
    }
    t
}

fn archive(tree: &BTreeMap<String, (u32, Kind)>) -> Vec<u8> {
    let mut a = Archive::new();
    for (p, (m, k)) in tree {
        a.add(p, Some(*m), k.clone()).unwrap();
    }
    let mut out = Vec::new();
    a.write(&mut out, 1_600_000_000).unwrap();
    out
}

/// Reads a directory tree back as (path, mode, kind), directories included.
fn scan(root: &Path) -> BTreeMap<String, (u32, Kind)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let kind = if meta.file_type().is_symlink() {
                Kind::Symlink(std::fs::read_link(&p).unwrap().to_str().unwrap().to_owned())
            } else if meta.is_dir() {
                stack.push(p.clone());
                Kind::Dir
            } else {
                Kind::File(std::fs::read(&p).unwrap())
            };
            out.insert(
                rel,
                (
                    if meta.file_type().is_symlink() {
                        0o777
                    } else {
                        mode
                    },
                    kind,
                ),
            );
        }
    }
    out
}

#[test]
fn gnu_cpio_extracts_our_archives() {
    let mut rng = Rng::new(cocos_testkit::seed("gnu cpio extracts ours"));
    for case in 0..20 {
        let tree = random_tree(&mut rng);
        let data = archive(&tree);
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .expect("cpio not installed: run scripts/setup.sh");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&data).unwrap();
        assert!(child.wait().unwrap().success(), "case {case}");
        let got = scan(dir.path());
        // Our archive also holds the implicit parent directories.
        let mut want = tree.clone();
        for p in tree.keys() {
            let mut acc = String::new();
            for c in p.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
                acc = if acc.is_empty() {
                    (*c).to_owned()
                } else {
                    format!("{acc}/{c}")
                };
                want.entry(acc.clone()).or_insert((0o755, Kind::Dir));
            }
        }
        assert_eq!(got, want, "case {case}");
    }
}

#[test]
fn we_read_gnu_cpio_archives() {
    let mut rng = Rng::new(cocos_testkit::seed("ours reads gnu cpio") ^ 0x9e37_79b9);
    for case in 0..20 {
        let tree = random_tree(&mut rng);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        for (p, (m, k)) in &tree {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            match k {
                Kind::Dir => std::fs::create_dir_all(&path).unwrap(),
                Kind::Symlink(t) => symlink(t, &path).unwrap(),
                Kind::File(d) => std::fs::write(&path, d).unwrap(),
                Kind::CharDev { .. } => unreachable!(),
            }
            if !matches!(k, Kind::Symlink(_)) {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*m)).unwrap();
            }
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg("cd root && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let entries = read(&out.stdout).unwrap_or_else(|e| panic!("case {case}: {e}"));
        let got: BTreeMap<String, (u32, Kind)> = entries
            .into_iter()
            .map(|e| (e.entry.path, (e.entry.mode, e.entry.kind)))
            .collect();
        assert_eq!(got, scan(&root), "case {case}");
    }
}

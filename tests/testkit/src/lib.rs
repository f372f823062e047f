//! Test support shared by every crate's tests (a dev-dependency only; it depends on no
//! workspace crate, so the graph stays one-way): where the workspace and the inputs
//! installed by `scripts/setup.sh` / `scripts/test.sh` are, replayable seeds, random
//! kernel command lines, synthetic firmware images ([`firmware`]), and SEV-SNP evidence
//! signed by a test-only certificate chain ([`snp_evidence`]).
//!
//! Missing inputs fail the test with set-up instructions rather than skipping it.

// Test support: a helper that cannot find or build what a test needs panics, which fails
// that test with the message (clippy.toml allows these inside #[test] functions only).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod cocos_policy;
pub mod cose;
pub mod firmware;
pub mod keys;
pub mod snp_evidence;

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::Rng;

/// The workspace root (the directory holding the workspace's Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/testkit sits two levels below the workspace root")
        .to_path_buf()
}

/// Debian's kernel: the newest `/boot/vmlinuz-*` by version sort (from
/// linux-image-amd64, installed by scripts/setup.sh); fails the test if there is none.
pub fn debian_kernel() -> PathBuf {
    newest_kernel(kernels_in(Path::new("/boot")))
        .expect("no /boot/vmlinuz-*: run scripts/setup.sh (Debian package linux-image-amd64)")
}

/// The initrd Debian built for [`debian_kernel`] (`/boot/initrd.img-<release>`); fails
/// the test if there is none.
pub fn debian_initrd() -> PathBuf {
    let k = debian_kernel();
    let initrd = k.with_file_name(format!("initrd.img-{}", kernel_release(&k)));
    assert!(
        initrd.is_file(),
        "{} missing: run scripts/setup.sh (Debian package linux-image-amd64)",
        initrd.display()
    );
    initrd
}

/// The kernel release a `vmlinuz-<release>` file is named for.
pub fn kernel_release(kernel: &Path) -> String {
    let name = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("{}: not a UTF-8 file name", kernel.display()));
    name.strip_prefix("vmlinuz-")
        .unwrap_or_else(|| panic!("{}: not a vmlinuz-<release> file", kernel.display()))
        .to_owned()
}

/// A kernel whose EFI stub measures into TDX RTMRs (Linux ≥ 6.9): the HAL's pinned
/// Debian 13 kernel, which `scripts/test.sh` fetches into target/hal-cache
/// (`cocos-hal kernel --spec hal/cocos.toml --locked`) before the tests run; the newest
/// by version sort if there are several.
pub fn stub_measuring_kernel() -> PathBuf {
    let cache = workspace_root().join("target/hal-cache");
    let kernels = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("boot")))
        .filter(|b| b.is_dir())
        .flat_map(|b| kernels_in(&b))
        .filter(|k| major_minor(&kernel_release(k)).is_some_and(|mm| mm >= (6, 9)));
    newest_kernel(kernels).unwrap_or_else(|| {
        panic!(
            "no Linux >= 6.9 kernel under {}: run scripts/test.sh, or `cargo run -p cocos-hal -- kernel --spec hal/cocos.toml --locked`",
            cache.display()
        )
    })
}

/// The oracle venv's Python (or `COCOS_ORACLE_PYTHON`); fails the test with set-up
/// instructions if missing.
pub fn oracle_python() -> PathBuf {
    let p = std::env::var_os("COCOS_ORACLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/oracle-venv/bin/python"));
    assert!(
        p.exists(),
        "oracle Python {} missing: run scripts/setup.sh (it installs sev-snp-measure==0.0.13)",
        p.display()
    );
    p
}

/// A seed from `COCOS_TEST_SEED` or the clock, printed with `test`'s name so that a
/// failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("COCOS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {s} (replay with COCOS_TEST_SEED={s})");
    s
}

/// A random kernel command line: empty, ASCII, or with non-ASCII UTF-8.
pub fn random_cmdline(rng: &mut impl Rng) -> String {
    const WORDS: &[&str] = &[
        "console=ttyS0",
        "quiet",
        "root=/dev/vda1",
        "cocos.id=abc-123",
        "cocos.events=vsock:2:9997",
        "init=/init",
        "x=\"a b\"",
        "é",
        "日本語",
        "🦀",
        "Ωmega=∞",
        "-dash",
        "=eq",
        "tab\there",
    ];
    match rng.gen_range(0..10) {
        0 => String::new(),
        1 => (0..rng.gen_range(1..200))
            .map(|_| rng.gen_range(' '..='~'))
            .collect(),
        _ => (0..rng.gen_range(1..8))
            .map(|_| *WORDS.choose(rng).unwrap_or(&"quiet"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// The `vmlinuz-*` files in `dir` (none if it cannot be read).
fn kernels_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect()
}

/// The newest of `kernels` by version sort of their releases.
fn newest_kernel(kernels: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    kernels
        .into_iter()
        .max_by(|a, b| version_cmp(&kernel_release(a), &kernel_release(b)).then_with(|| a.cmp(b)))
}

/// (major, minor) of a kernel release such as "6.12.117+deb13-amd64".
fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Version order (as `sort -V`, for what kernel releases contain): runs of digits
/// compare as numbers, everything else byte by byte.
fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = a.split_at(a.iter().take_while(|c| c.is_ascii_digit()).count());
                let (nb, rb) = b.split_at(b.iter().take_while(|c| c.is_ascii_digit()).count());
                let zeros = |n: &[u8]| n.iter().take_while(|c| **c == b'0').count();
                let (na, nb) = (&na[zeros(na)..], &nb[zeros(nb)..]);
                let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if o != Ordering::Equal {
                    return o;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_sort_orders_kernel_releases() {
        let mut v = [
            "6.12.117+deb13-amd64",
            "6.1.0-57-amd64",
            "6.1.0-9-amd64",
            "6.12.9+deb13-amd64",
            "5.10.0-30-amd64",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            v,
            [
                "5.10.0-30-amd64",
                "6.1.0-9-amd64",
                "6.1.0-57-amd64",
                "6.12.9+deb13-amd64",
                "6.12.117+deb13-amd64",
            ]
        );
        assert_eq!(version_cmp("6.01", "6.1"), Ordering::Equal);
    }

    #[test]
    fn newest_kernel_is_by_version_not_by_bytes() {
        let ks = [
            "/boot/vmlinuz-6.1.0-57-amd64",
            "/boot/vmlinuz-6.12.1-amd64",
            "/boot/vmlinuz-6.9.0-1-amd64",
        ]
        .map(PathBuf::from);
        assert_eq!(
            newest_kernel(ks),
            Some(PathBuf::from("/boot/vmlinuz-6.12.1-amd64"))
        );
        assert_eq!(newest_kernel(Vec::new()), None);
        assert_eq!(major_minor("6.12.117+deb13-amd64"), Some((6, 12)));
        assert_eq!(
            kernel_release(Path::new("/boot/vmlinuz-6.1.0-57-amd64")),
            "6.1.0-57-amd64"
        );
    }
}

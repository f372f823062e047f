//! RTMR checks against implementations written here from the published algorithms,
//! independently of the library's code paths, on random inputs (seed printed; set
//! COCOS_TEST_SEED to replay):
//!
//! * TD HOB: an interval model of QEMU's RAM list (RAM minus the accepted TD_HOB and
//!   TEMP_MEM sections, sorted) and the HOB layout of the UEFI PI spec, on random
//!   TDVF layouts and memory sizes around the q35 2 GiB / 2.75 GiB boundaries.
//! * RTMR1: Authenticode per the PE/COFF specification (hand-parsed here, not through
//!   the `authenticode`/`object` crates) of Debian's kernel with QEMU's setup-header
//!   patches (Linux boot protocol fields), for random memory, initrd sizes and `vga=`.
//! * RTMR2: edk2's LoadOptions (each byte widened to a CHAR16, " initrd=initrd" only
//!   for a non-empty initrd) and the Linux ≥ 6.9 EFI stub's events, on the HAL's pinned
//!   Debian 13 kernel, for random command lines (non-ASCII included), absent, empty and
//!   non-empty initrds, both "initrd=initrd" placements, and the pre-6.9 case; the
//!   sources each rule follows are cited at the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // also in helpers outside #[test] fns, which clippy.toml's allow-*-in-tests do not cover

use cocos_measure::bzimage::KernelSetup;
use cocos_measure::rtmr::{InitrdOption, Platform};
use cocos_measure::tdhob::TdHob;
use cocos_measure::tdvf::{TdvfSection, TdvfSectionKind};
use cocos_measure::tdx_launch::{
    measure, StubMeasures, TdxFirmware, TdxInitrd, TdxKernel, TdxOptions,
};
use cocos_measure::Firmware;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha384};

fn sha384(d: &[u8]) -> [u8; 48] {
    Sha384::digest(d).into()
}

fn chain(digests: &[[u8; 48]]) -> [u8; 48] {
    let mut r = [0u8; 48];
    for d in digests {
        let mut x = r.to_vec();
        x.extend_from_slice(d);
        r = sha384(&x);
    }
    r
}

// ---- TD HOB ----

fn below_above(mem: u64) -> (u64, u64) {
    let low = if mem >= 0xb000_0000 {
        0x8000_0000
    } else {
        0xb000_0000
    };
    if mem >= low {
        (low, mem - low)
    } else {
        (mem, 0)
    }
}

/// RAM as (start, end, accepted) intervals: RAM minus accepted pieces, split there.
fn model_ranges(accepted: &[(u64, u64)], mem: u64) -> Vec<(u64, u64, bool)> {
    let (below, above) = below_above(mem);
    let mut ram = vec![(0u64, below)];
    if above > 0 {
        ram.push((1 << 32, (1 << 32) + above));
    }
    let mut out = Vec::new();
    for (s, e) in ram {
        let mut cuts: Vec<(u64, u64)> = accepted
            .iter()
            .copied()
            .filter(|&(a, b)| a >= s && b <= e)
            .collect();
        cuts.sort_unstable();
        let mut pos = s;
        for (a, b) in cuts {
            if a > pos {
                out.push((pos, a, false));
            }
            out.push((a, b, true));
            pos = b;
        }
        if pos < e {
            out.push((pos, e, false));
        }
    }
    out.sort_unstable();
    out
}

fn model_hob(hob_gpa: u64, ranges: &[(u64, u64, bool)]) -> Vec<u8> {
    let total = 56 + 48 * ranges.len() as u64 + 8;
    let mut b = Vec::new();
    b.extend([1u8, 0, 56, 0, 0, 0, 0, 0]);
    b.extend(9u32.to_le_bytes());
    b.extend([0u8; 4 + 32]);
    b.extend((hob_gpa + total).to_le_bytes());
    for &(s, e, acc) in ranges {
        b.extend([3u8, 0, 48, 0, 0, 0, 0, 0]);
        b.extend([0u8; 16]);
        b.extend(if acc { 0u32 } else { 7u32 }.to_le_bytes());
        b.extend(7u32.to_le_bytes());
        b.extend(s.to_le_bytes());
        b.extend((e - s).to_le_bytes());
    }
    b
}

#[test]
fn td_hob_matches_an_interval_model_on_random_layouts() {
    let seed = cocos_testkit::seed("td_hob_matches_an_interval_model_on_random_layouts");
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..300 {
        let mem = match rng.gen_range(0..4) {
            0 => rng.gen_range(64u64..4096) << 20,
            1 => 0xb000_0000 + rng.gen_range(0..3u64) * 4096 - 4096,
            2 => 0x8000_0000 + rng.gen_range(0..3u64) * 4096 - 4096,
            _ => rng.gen_range(1u64..64) << 30,
        };
        // Non-overlapping page-aligned TD_HOB/TEMP_MEM sections inside the first 48 MiB.
        let n = rng.gen_range(1..6);
        let mut slots: Vec<u64> = (0..12_288u64).collect();
        let mut sections = vec![TdvfSection {
            data_offset: 0,
            raw_size: 0x1000,
            memory_address: 0xffff_f000,
            memory_size: 0x1000,
            kind: TdvfSectionKind::Bfv,
            attributes: 1,
        }];
        let mut accepted = Vec::new();
        while accepted.len() < n {
            let pages = rng.gen_range(1..16u64);
            let at = slots[rng.gen_range(0..slots.len())];
            if (at..at + pages).any(|p| !slots.contains(&p)) {
                continue;
            }
            slots.retain(|p| !(at..at + pages).contains(p));
            let kind = if accepted.is_empty() {
                TdvfSectionKind::TdHob
            } else {
                TdvfSectionKind::TempMem
            };
            sections.push(TdvfSection {
                data_offset: 0,
                raw_size: 0,
                memory_address: at << 12,
                memory_size: pages << 12,
                kind,
                attributes: 0,
            });
            accepted.push((at << 12, (at + pages) << 12));
        }
        let mut shuffled = sections.clone();
        shuffled[1..].reverse();
        let hob_gpa = sections[1].memory_address;
        let hob_size = sections[1].memory_size;
        let ranges = model_ranges(&accepted, mem);
        let fits_ram = accepted.iter().all(|&(_, e)| e <= below_above(mem).0);
        let fits_hob = 56 + 48 * ranges.len() as u64 + 8 <= hob_size;
        let got = TdHob::build(&shuffled, mem);
        if !fits_ram || !fits_hob {
            assert!(
                got.is_err(),
                "seed {seed} case {case}: expected a refusal, got {got:?}"
            );
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("seed {seed} case {case}: {e}"));
        assert_eq!(got.address, hob_gpa);
        assert_eq!(
            got.measured(),
            model_hob(hob_gpa, &ranges).as_slice(),
            "seed {seed} case {case}, memory {mem:#x}"
        );
    }
}

// ---- RTMR1: Authenticode of the patched kernel ----

fn u16at(d: &[u8], o: usize) -> usize {
    u16::from_le_bytes([d[o], d[o + 1]]) as usize
}

fn u32at(d: &[u8], o: usize) -> usize {
    u32::from_le_bytes(d[o..o + 4].try_into().unwrap()) as usize
}

/// Authenticode as in the PE/COFF spec ("Calculating the PE Image Hash").
fn authenticode(d: &[u8]) -> [u8; 48] {
    let pe = u32at(d, 0x3c);
    assert_eq!(&d[pe..pe + 4], b"PE\0\0");
    let coff = pe + 4;
    let nsec = u16at(d, coff + 2);
    let opt_size = u16at(d, coff + 16);
    let opt = coff + 20;
    let plus = u16at(d, opt) == 0x20b;
    let checksum = opt + 64;
    let dirs = opt + if plus { 112 } else { 96 };
    let cert_dir = dirs + 4 * 8;
    let size_of_headers = u32at(d, opt + 60);
    let mut h = Sha384::new();
    h.update(&d[..checksum]);
    h.update(&d[checksum + 4..cert_dir]);
    h.update(&d[cert_dir + 8..size_of_headers]);
    let mut hashed = size_of_headers;
    let mut secs: Vec<(usize, usize)> = (0..nsec)
        .map(|i| {
            let s = opt + opt_size + 40 * i;
            (u32at(d, s + 20), u32at(d, s + 16))
        })
        .filter(|&(_, size)| size > 0)
        .collect();
    secs.sort_unstable();
    for (off, size) in secs {
        h.update(&d[off..off + size]);
        hashed += size;
    }
    let cert_size = u32at(d, cert_dir + 4);
    if d.len() > hashed + cert_size {
        h.update(&d[hashed..d.len() - cert_size]);
    }
    h.finalize().into()
}

/// QEMU's header patch for a modern (protocol >= 2.12, loaded-high) bzImage.
fn qemu_patch(k: &mut [u8], mem: u64, initrd: Option<u64>, vga: Option<u16>) {
    k[0x210] = 0xb0;
    k[0x211] |= 0x80;
    k[0x224..0x226].copy_from_slice(&(0x20000u32 - 0x10000 - 0x200).to_le_bytes()[..2]);
    k[0x228..0x22c].copy_from_slice(&0x20000u32.to_le_bytes());
    if let Some(m) = vga {
        k[0x1fa..0x1fc].copy_from_slice(&m.to_le_bytes());
    }
    if let Some(size) = initrd {
        let below = below_above(mem).0;
        let xlf_above_4g = u16at(k, 0x236) & 2 != 0;
        let mut max = if xlf_above_4g {
            u64::from(u32::MAX)
        } else {
            u32at(k, 0x22c) as u64
        };
        if max >= below - 0x28000 {
            max = below - 0x28000 - 1;
        }
        let addr = (max - size) & !4095;
        k[0x218..0x21c].copy_from_slice(&(addr as u32).to_le_bytes());
        k[0x21c..0x220].copy_from_slice(&(size as u32).to_le_bytes());
    }
}

fn rtmr1_expected(kernel_digest: [u8; 48]) -> [u8; 48] {
    chain(&[
        kernel_digest,
        sha384(b"Calling EFI Application from Boot Option"),
        sha384(&[0; 4]),
        sha384(b"Exit Boot Services Invocation"),
        sha384(b"Exit Boot Services Returned with Success"),
    ])
}

fn debian() -> (TdxFirmware, Vec<u8>) {
    let fw =
        std::fs::read("/usr/share/ovmf/OVMF.fd").expect("Debian's OVMF.fd: run scripts/setup.sh");
    let fw = TdxFirmware::new(Firmware::parse(fw).unwrap()).unwrap();
    let k = std::fs::read(cocos_testkit::debian_kernel()).unwrap();
    (fw, k)
}

#[test]
fn rtmr1_matches_spec_authenticode_of_the_patched_debian_kernel() {
    let seed = cocos_testkit::seed("rtmr1_matches_spec_authenticode_of_the_patched_debian_kernel");
    let mut rng = StdRng::seed_from_u64(seed);
    let (fw, kbytes) = debian();
    let kernel = TdxKernel::new(kbytes.clone()).unwrap();
    let plain = authenticode(&kbytes);
    for case in 0..12 {
        let mem = match rng.gen_range(0..3) {
            0 => rng.gen_range(256u64..2816) << 20,
            1 => rng.gen_range(2816u64..65536) << 20,
            _ => 0xa000_0000,
        };
        let initrd = if rng.gen_bool(0.8) {
            Some(rng.gen_range(0..200u64 << 20))
        } else {
            None
        };
        let vga = rng.gen_bool(0.2).then(|| rng.gen_range(0..0x400u16));
        let cmdline = match vga {
            Some(m) => format!("console=ttyS0 vga={m:#x}"),
            None => cocos_testkit::random_cmdline(&mut rng),
        };
        for setup in [KernelSetup::Patched, KernelSetup::Unmodified] {
            let opts = TdxOptions {
                memory: mem,
                kernel_setup: setup,
                stub_measures: StubMeasures::No,
                ..TdxOptions::default()
            };
            let i = initrd.map(|size| TdxInitrd {
                size,
                sha384: [7; 48],
            });
            let m = measure(
                &fw,
                Some(&kernel),
                i.as_ref(),
                &cmdline,
                &Platform::default(),
                &opts,
            )
            .unwrap_or_else(|e| panic!("seed {seed} case {case}: {e}"));
            let want = if setup == KernelSetup::Patched {
                let mut k = kbytes.clone();
                qemu_patch(&mut k, mem, initrd, vga);
                authenticode(&k)
            } else {
                plain
            };
            assert_eq!(m.rtmr[1], Some(rtmr1_expected(want)), "seed {seed} case {case} {setup}: mem {mem:#x} initrd {initrd:?} cmdline {cmdline:?}");
            assert_eq!(m.rtmr[2], Some([0; 48]));
            assert_eq!(m.rtmr[0], None);
        }
    }
}

// ---- RTMR2 ----
//
// Written from the sources, not from the library:
// * edk2 `OvmfPkg/Library/X86QemuLoadImageLib/X86QemuLoadImageLib.c`,
//   `QemuLoadKernelImage`: LoadOptionsSize = (CommandLineSize - 1) * 2, plus
//   `sizeof (L" initrd=initrd") - 2` only `if (InitrdSize > 0)`, plus 2 for the NUL;
//   NULL when that is 0; filled by `UnicodeSPrintAsciiFormat ("%a%a%a", …)`.
//   stable202508 (commit a2ac0fea49) moves the option to the front: "initrd=initrd ".
// * edk2 `MdePkg/Library/BasePrintLib/PrintLibInternal.c`, `BasePrintLibSPrintMarker`:
//   for `%a`, `ArgumentMask = 0xff` and one byte per argument character, so each byte
//   of the (UTF-8) command line becomes one CHAR16 with a zero high byte.
// * edk2 `OvmfPkg/QemuKernelLoaderFsDxe/QemuKernelLoaderFsDxe.c`,
//   `QemuKernelFetchBlob`: a blob of size 0 is not created, so no initrd LoadFile2.
// * Linux `drivers/firmware/efi/libstub/efi-stub-helper.c`: `efi_convert_cmdline`
//   measures `load_options_size` bytes at `load_options` (the NUL included) as the
//   EV_EVENT_TAG "LOADED_IMAGE::LoadOptions" when there are any; `efi_load_initrd`
//   measures the initrd ("Linux initrd") only when one was loaded with size > 0; both
//   to PCR 9, which the CC protocol maps to RTMR2 (6.9+, commit ac93cbfc2a2c).

/// The LoadOptions bytes edk2 hands the kernel, per the sources above.
fn edk2_load_options(cmdline: &[u8], initrd_size: u64, prepend: bool) -> Option<Vec<u8>> {
    let mut ascii = Vec::new();
    if initrd_size > 0 && prepend {
        ascii.extend_from_slice(b"initrd=initrd ");
    }
    ascii.extend_from_slice(cmdline);
    if initrd_size > 0 && !prepend {
        ascii.extend_from_slice(b" initrd=initrd");
    }
    if ascii.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for b in ascii {
        out.push(b);
        out.push(0);
    }
    out.extend_from_slice(&[0, 0]);
    Some(out)
}

#[test]
fn load_options_widen_bytes_and_skip_an_empty_initrd() {
    // "é" is C3 A9 in UTF-8: two CHAR16s C3 00 A9 00, not UTF-16 E9 00.
    assert_eq!(
        edk2_load_options("é".as_bytes(), 0, false).unwrap(),
        [0xc3, 0, 0xa9, 0, 0, 0]
    );
    assert_eq!(edk2_load_options(b"", 0, false), None);
    assert_eq!(edk2_load_options(b"q", 0, true).unwrap(), [b'q', 0, 0, 0]);
    let lib = |c: &[u8], n, o| cocos_measure::rtmr::load_options(c, n, o);
    for (c, n) in [("é", 0), ("é", 5), ("", 5), ("", 0), ("a 日本", 1)] {
        for (o, prepend) in [(InitrdOption::Append, false), (InitrdOption::Prepend, true)] {
            assert_eq!(
                lib(c.as_bytes(), n, o),
                edk2_load_options(c.as_bytes(), n, prepend)
            );
        }
    }
}

#[test]
fn rtmr2_matches_edk2_and_the_stub_on_a_6_12_kernel_for_random_cmdlines() {
    let seed =
        cocos_testkit::seed("rtmr2_matches_edk2_and_the_stub_on_a_6_12_kernel_for_random_cmdlines");
    let mut rng = StdRng::seed_from_u64(seed);
    let (fw, old_kernel) = debian();
    let kernel = TdxKernel::from_file(&cocos_testkit::stub_measuring_kernel()).unwrap();
    assert_eq!(kernel.stub_measures_tdx(), Some(true));
    // Debian 12's 6.1 stub does not measure into TDX registers: RTMR2 stays zero.
    let old = TdxKernel::new(old_kernel).unwrap();
    let m = measure(
        &fw,
        Some(&old),
        None,
        "quiet",
        &Platform::default(),
        &TdxOptions::default(),
    )
    .unwrap();
    assert_eq!(old.stub_measures_tdx(), Some(false));
    assert_eq!(m.rtmr[2], Some([0; 48]));
    assert!(m.notes.iter().any(|n| n.contains("6.9")));
    for case in 0..100 {
        let cmdline = cocos_testkit::random_cmdline(&mut rng);
        // Absent, zero-byte and non-empty initrds.
        let initrd = match rng.gen_range(0..10) {
            0..=2 => None,
            3 => Some(TdxInitrd::from_bytes(&[])),
            _ => {
                let data: Vec<u8> = (0..rng.gen_range(1..5000)).map(|_| rng.gen()).collect();
                Some(TdxInitrd::from_bytes(&data))
            }
        };
        for (placement, prepend) in [(InitrdOption::Append, false), (InitrdOption::Prepend, true)] {
            let opts = TdxOptions {
                initrd_option: placement,
                stub_measures: StubMeasures::Auto,
                kernel_setup: KernelSetup::Unmodified,
                ..TdxOptions::default()
            };
            let m = measure(
                &fw,
                Some(&kernel),
                initrd.as_ref(),
                &cmdline,
                &Platform::default(),
                &opts,
            )
            .unwrap();
            let size = initrd.map_or(0, |i| i.size);
            let mut events = Vec::new();
            if let Some(o) = edk2_load_options(cmdline.as_bytes(), size, prepend) {
                events.push(sha384(&o));
            }
            if let Some(i) = initrd.filter(|i| i.size > 0) {
                events.push(i.sha384);
            }
            assert_eq!(
                m.rtmr[2],
                Some(chain(&events)),
                "seed {seed} case {case}: {cmdline:?} initrd {size} bytes {placement:?}"
            );
        }
    }
}

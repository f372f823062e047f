//! The measurement facade (`launch::QemuBoot`) against the layer below it: for random
//! synthetic firmware, random kernels, initrds and command lines, loading from files
//! and from bytes gives the digests that `SnpPrepared::digest` with
//! `KernelHashes::from_bytes` and `tdx_launch::measure_launch` with explicitly built
//! inputs give; a matrix equals its single launches; the typed results survive a JSON
//! round trip; and misuse is an error that says what is wrong. (The cross-checks
//! against sev-snp-measure, the sev crate and tdx-measure go through the facade too:
//! the CLI, cocos-hal and the manager all call it.)

#![allow(clippy::unwrap_used, clippy::panic)] // also in helpers outside #[test] fns

use std::path::Path;

use cocos_measure::launch::{BootFiles, QemuBoot, SnpLaunch, SnpMeasurement, Tee, Vcpu};
use cocos_measure::rtmr::Platform;
use cocos_measure::tdx_launch::{
    measure_launch, TdxFirmware, TdxInitrd, TdxKernel, TdxLaunch, TdxRegisters,
};
use cocos_measure::{Firmware, KernelHashes, MeasureError, SnpParams, SnpPrepared, VmmType};
use cocos_testkit::firmware::{synth_firmware, synth_tdvf};
use rand::{Rng, SeedableRng};

/// The facade's two results (loaded from files, from bytes) and the layer below's:
/// when the layer below refuses, both facade results must refuse with the same
/// message (`None`); otherwise the three values.
fn agree<A, W>(
    a: Result<A, MeasureError>,
    b: Result<A, MeasureError>,
    want: Result<W, MeasureError>,
    ctx: &str,
) -> Option<(A, A, W)> {
    match want {
        Ok(w) => Some((a.unwrap(), b.unwrap(), w)),
        Err(e) => {
            for got in [a, b] {
                match got {
                    Err(g) => assert_eq!(g.to_string(), e.to_string(), "{ctx}"),
                    Ok(_) => panic!("{ctx}: the layer below refuses ({e}), the facade does not"),
                }
            }
            None
        }
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<std::path::PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, data)?;
    Ok(p)
}

#[test]
fn snp_facade_matches_the_prepared_layer() {
    let seed = cocos_testkit::seed("facade snp");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let d = tempfile::tempdir().unwrap();
    let (mut checked, mut refused) = (0, 0);
    while checked < 25 {
        assert!(
            refused < 200,
            "COCOS_TEST_SEED={seed}: the generator gives no usable firmware"
        );
        let (fw, info) = synth_firmware(&mut rng, false);
        if !info.kernel_hashes || fw.len() % 4096 != 0 {
            continue;
        }
        let kernel: Vec<u8> = (0..rng.gen_range(1..300_000)).map(|_| rng.gen()).collect();
        let initrd: Vec<u8> = (0..rng.gen_range(0..300_000)).map(|_| rng.gen()).collect();
        let cmdline = cocos_testkit::random_cmdline(&mut rng);
        let files = (
            write(d.path(), "fw", &fw).unwrap(),
            write(d.path(), "k", &kernel).unwrap(),
            write(d.path(), "i", &initrd).unwrap(),
        );
        let vcpu =
            Vcpu::named(["EPYC-Milan", "EPYC-Genoa", "EPYC-v4"][rng.gen_range(0..3)]).unwrap();
        let launch = SnpLaunch {
            vcpus: rng.gen_range(1..=64),
            vcpu,
            guest_features: [0x1, 0x21, 0x5][rng.gen_range(0..3)],
            vmm: VmmType::Qemu,
        };
        let ctx = format!("COCOS_TEST_SEED={seed} case {checked}: {}", info.desc);

        let loaded = QemuBoot::load(
            &BootFiles {
                firmware: &files.0,
                kernel: Some(&files.1),
                initrd: Some(&files.2),
            },
            Tee::Snp { ovmf_hash: None },
        )
        .unwrap();
        let from_bytes = QemuBoot::from_bytes(
            fw.clone(),
            Some(kernel.clone()),
            Some(&initrd),
            Tee::Snp { ovmf_hash: None },
        )
        .unwrap();
        let prepared = SnpPrepared::new(&Firmware::parse(fw).unwrap()).unwrap();
        let hashes = KernelHashes::from_bytes(&kernel, Some(&initrd), cmdline.as_bytes());
        let params = SnpParams {
            vcpus: launch.vcpus,
            vcpu_sig: vcpu.sig,
            guest_features: launch.guest_features,
            vmm: launch.vmm,
        };
        let a = loaded.snp().unwrap().measure(&cmdline, &launch);
        let b = from_bytes.snp().unwrap().measure(&cmdline, &launch);
        let Some((a, b, want)) = agree(a, b, prepared.digest(Some(&hashes), &params), &ctx) else {
            refused += 1;
            continue;
        };
        assert_eq!(a.measurement, want, "{ctx}: loaded from files");
        assert_eq!(b.measurement, want, "{ctx}: from bytes");
        assert_eq!(a, b, "{ctx}");
        assert_eq!(a.ovmf_hash, prepared.ovmf_hash(), "{ctx}");
        assert_eq!(a.cmdline.as_deref(), Some(cmdline.as_str()), "{ctx}");
        assert_eq!(loaded.kernel().unwrap().size, kernel.len() as u64);
        assert_eq!(loaded.initrd().unwrap().size, initrd.len() as u64);

        // The typed result round-trips through its JSON form.
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<SnpMeasurement>(&json).unwrap(), a);

        // A matrix is its single launches, in vCPU type, features, count order.
        let types = [vcpu, Vcpu::named("EPYC-Rome").unwrap()];
        let rows = loaded
            .snp()
            .unwrap()
            .matrix(
                &cmdline,
                &types,
                &[0x1, 0x21],
                &[1, launch.vcpus],
                VmmType::Qemu,
            )
            .unwrap();
        assert_eq!(rows.len(), 8);
        let mut i = rows.iter();
        for t in types {
            for f in [0x1, 0x21] {
                for n in [1, launch.vcpus] {
                    let one = SnpLaunch {
                        vcpus: n,
                        vcpu: t,
                        guest_features: f,
                        vmm: VmmType::Qemu,
                    };
                    let want = from_bytes.snp().unwrap().measure(&cmdline, &one).unwrap();
                    assert_eq!(i.next(), Some(&want), "{ctx}");
                }
            }
        }
        checked += 1;
    }
}

#[test]
fn tdx_facade_matches_measure_launch() {
    let seed = cocos_testkit::seed("facade tdx");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let d = tempfile::tempdir().unwrap();
    let kernel_path = cocos_testkit::stub_measuring_kernel();
    let kernel = std::fs::read(&kernel_path).unwrap();
    let (mut case, mut refused) = (0, 0);
    while case < 6 {
        assert!(
            refused < 200,
            "COCOS_TEST_SEED={seed}: the generator gives no usable firmware"
        );
        let fw = synth_tdvf(&mut rng);
        let initrd: Vec<u8> = (0..rng.gen_range(0..300_000)).map(|_| rng.gen()).collect();
        let cmdline = cocos_testkit::random_cmdline(&mut rng);
        let fw_path = write(d.path(), "fw", &fw).unwrap();
        let initrd_path = write(d.path(), "i", &initrd).unwrap();
        let launch = TdxLaunch {
            memory: [1u64 << 30, 2 << 30, 6 << 30][rng.gen_range(0..3)],
            ..TdxLaunch::default()
        };
        let ctx = format!("COCOS_TEST_SEED={seed} case {case}");

        let loaded = QemuBoot::load(
            &BootFiles {
                firmware: &fw_path,
                kernel: Some(&kernel_path),
                initrd: Some(&initrd_path),
            },
            Tee::Tdx,
        )
        .unwrap()
        .tdx()
        .unwrap();
        let from_bytes =
            QemuBoot::from_bytes(fw.clone(), Some(kernel.clone()), Some(&initrd), Tee::Tdx)
                .unwrap()
                .tdx()
                .unwrap();
        let platform = Platform::default();
        // Loaded for this launch (digests computed while loading) gives the same.
        let for_launch = QemuBoot::load_tdx(
            &BootFiles {
                firmware: &fw_path,
                kernel: Some(&kernel_path),
                initrd: Some(&initrd_path),
            },
            &cmdline,
            &launch,
        )
        .and_then(|b| b.measure(&cmdline, &platform, &launch));
        let a = loaded.measure(&cmdline, &platform, &launch);
        let b = from_bytes.measure(&cmdline, &platform, &launch);
        let want = measure_launch(
            &TdxFirmware::new(Firmware::parse(fw).unwrap()).unwrap(),
            Some(&TdxKernel::new(kernel.clone()).unwrap()),
            Some(&TdxInitrd::from_bytes(&initrd)),
            &cmdline,
            &platform,
            &launch,
        );
        let refuses = want.is_err();
        let Some((a, b, want)) = agree(a, b, want, &ctx) else {
            assert!(
                refuses && for_launch.is_err(),
                "{ctx}: loaded for the launch"
            );
            refused += 1;
            continue;
        };
        assert_eq!(for_launch.unwrap(), want, "{ctx}: loaded for the launch");
        assert_eq!(a, want, "{ctx}: loaded from files");
        assert_eq!(b, want, "{ctx}: from bytes");
        assert!(a.rtmr[1].is_some() && a.rtmr[2].is_some(), "{ctx}");

        // What a verifier stores round-trips; the full result adds the event log.
        let regs = a.registers();
        let json = serde_json::to_string(&regs).unwrap();
        assert_eq!(serde_json::from_str::<TdxRegisters>(&json).unwrap(), regs);
        let full = serde_json::to_value(&a).unwrap();
        assert_eq!(full["events"].as_array().unwrap().len(), a.events.len());
        assert_eq!(full["mrtd"], hex::encode(a.mrtd));
        case += 1;
    }
}

#[test]
fn misuse_is_an_error_that_says_what_is_wrong() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let d = tempfile::tempdir().unwrap();
    let fw = synth_tdvf(&mut rng);
    let fw_path = write(d.path(), "fw", &fw).unwrap();
    let initrd_path = write(d.path(), "i", b"initrd").unwrap();

    // An initrd needs a kernel, as in QEMU.
    let files = BootFiles {
        firmware: &fw_path,
        kernel: None,
        initrd: Some(&initrd_path),
    };
    let e = QemuBoot::load(&files, Tee::Tdx).unwrap_err().to_string();
    assert!(e.contains("needs a kernel"), "{e}");
    let e = QemuBoot::from_bytes(fw.clone(), None, Some(b"x"), Tee::Sev)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs a kernel"), "{e}");

    // A missing input names its path; so does a directory given as a file.
    let missing = d.path().join("nope");
    for bad in [missing.as_path(), d.path()] {
        let files = BootFiles {
            firmware: &fw_path,
            kernel: Some(bad),
            initrd: None,
        };
        match QemuBoot::load(&files, Tee::Sev) {
            Err(MeasureError::Io { path, .. }) => assert_eq!(path, bad),
            other => panic!("{bad:?}: {other:?}"),
        }
    }

    // A boot hashed for SNP has no SHA-384 of its initrd: asking it for TDX is refused,
    // not answered with wrong values.
    let kernel_path = write(d.path(), "k", b"not a kernel at all").unwrap();
    let files = BootFiles {
        firmware: &fw_path,
        kernel: Some(&kernel_path),
        initrd: Some(&initrd_path),
    };
    let snp_loaded = QemuBoot::load(&files, Tee::Sev).unwrap();
    let e = snp_loaded.tdx().unwrap_err().to_string();
    assert!(e.contains("not loaded for TDX"), "{e}");

    // A TDX kernel must be a kernel.
    let e = QemuBoot::load(&files, Tee::Tdx).unwrap_err().to_string();
    assert!(e.contains(&kernel_path.display().to_string()), "{e}");
}

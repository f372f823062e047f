//! The manager's per-launch SNP measurement ([`Expected`], prepared once, computed
//! per launch) against sev-snp-measure 0.0.13 on the real AmdSev OVMF build: random
//! kernels, initrds, command lines (as the manager builds them, with random
//! computation ids), vCPU counts and types. A fresh seed each run, printed so a
//! failure can be replayed with COCOS_TEST_SEED.

use std::process::Command;

use cocos_manager::expected::{Expected, Target};
use rand::{Rng, SeedableRng};

#[test]
fn snp_launch_digests_match_sev_snp_measure() {
    let root = cocos_testkit::workspace_root();
    let fw_path = root.join("target/ovmf/out/OVMF.amdsev.fd");
    assert!(
        fw_path.is_file(),
        "{} missing: run scripts/build-ovmf.sh",
        fw_path.display()
    );
    let oracle = root.join("target/oracle-venv/bin/sev-snp-measure");
    assert!(
        oracle.is_file(),
        "{} missing: run scripts/setup.sh",
        oracle.display()
    );
    let seed = cocos_testkit::seed("snp launch digests");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let d = tempfile::tempdir().unwrap();
    let fw = std::fs::read(&fw_path).unwrap();
    for case in 0..12 {
        let kernel: Vec<u8> = (0..rng.gen_range(1..200_000)).map(|_| rng.gen()).collect();
        let initrd: Vec<u8> = (0..rng.gen_range(0..300_000)).map(|_| rng.gen()).collect();
        let (kp, ip) = (d.path().join("k"), d.path().join("i"));
        std::fs::write(&kp, &kernel).unwrap();
        std::fs::write(&ip, &initrd).unwrap();
        let vcpu_type = ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa", "EPYC-Rome"][rng.gen_range(0..4)];
        let features: u64 = [0x1, 0x21, 0x1 | (rng.gen::<u64>() & 0x3f0)][rng.gen_range(0..3)];
        let vcpus = rng.gen_range(1..=16u32);
        let id: String = (0..rng.gen_range(1..40))
            .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
            .collect();
        let cmdline = format!("console=ttyS0 quiet cocos.id={id} cocos.events=serial:cocos.events");
        let e = Expected::new(
            &Target::Snp {
                vcpu_type: vcpu_type.into(),
                guest_features: features,
            },
            fw.clone(),
            kernel.clone(),
            &initrd,
        )
        .unwrap();
        let got = serde_json::to_value(e.compute(&cmdline, vcpus).unwrap()).unwrap();
        assert_eq!(got["tee"], "snp");
        let out = Command::new(&oracle)
            .args([
                "--mode",
                "snp",
                "--vcpus",
                &vcpus.to_string(),
                "--vcpu-type",
                vcpu_type,
            ])
            .args(["--guest-features", &format!("{features:#x}")])
            .arg("--ovmf")
            .arg(&fw_path)
            .arg("--kernel")
            .arg(&kp)
            .arg("--initrd")
            .arg(&ip)
            .args(["--append", &cmdline])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert_eq!(
            got["measurement"].as_str().unwrap(),
            want,
            "case {case} (COCOS_TEST_SEED={seed}): {vcpu_type} x{vcpus} features {features:#x} cmdline {cmdline:?}"
        );
    }
}

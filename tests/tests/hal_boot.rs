//! End to end: `cocos-hal build` the default image (hal/cocos.toml: Debian's kernel,
//! busybox, the static agent), boot it under QEMU (TCG) with Debian's OVMF and direct
//! kernel boot, with a virtio-serial port on a Unix socket, and check that the agent's
//! boot event arrives within a bounded time with the computation id from the command
//! line, TEE "none" and the kernel release from release.json, and that an attestation
//! request gets an "unavailable" answer (no TEE here). Frames are acknowledged
//! as the manager would, so the agent's outbox drains. QEMU is killed when the test
//! ends, pass or fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test crate

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cocos_proto::frame::{self, ack, Decoder, Origin, Record};
use cocos_proto::messages::{
    agent_message, manager_message, AgentMessage, AttestationRequest, ManagerMessage,
};
use prost::Message;

/// Kills QEMU when the test ends, whatever happens.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn default_image_boots_and_reports_its_boot_event() {
    let root = root();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    // The spec is copied beside a fresh (empty) lock so this test resolves the current
    // kernel package: the committed hal/cocos.lock may name a version the mirror has
    // dropped since. The copy lives inside the workspace so `agent = "build"` finds it.
    std::fs::create_dir_all(root.join("target")).unwrap();
    let spec_dir = tempfile::Builder::new()
        .prefix("hal-boot-test")
        .tempdir_in(root.join("target"))
        .unwrap();
    let spec_path = spec_dir.path().join("cocos.toml");
    // SNP digests are checked on the AmdSev build (scripts/build-ovmf.sh), which can
    // measure kernels; Debian's OVMF cannot.
    let amdsev = root.join("target/ovmf/out/OVMF.amdsev.fd");
    assert!(
        amdsev.is_file(),
        "{} missing: run scripts/build-ovmf.sh",
        amdsev.display()
    );
    let text = std::fs::read_to_string(root.join("hal/cocos.toml")).unwrap();
    let text = text.replacen(
        "[measurements.snp]\nfirmware = \"/usr/share/ovmf/OVMF.fd\"",
        &format!("[measurements.snp]\nfirmware = \"{}\"", amdsev.display()),
        1,
    );
    assert!(
        text.contains("OVMF.amdsev.fd"),
        "hal/cocos.toml's [measurements.snp] changed shape"
    );
    std::fs::write(&spec_path, text).unwrap();
    let spec = cocos_hal::spec::Spec::load(&spec_path).unwrap();
    let opts = cocos_hal::build::BuildOptions {
        out: out.clone(),
        cache: root.join("target/hal-cache"),
        locked: false,
        source_date_epoch: None,
    };
    cocos_hal::build::build(&spec, &opts).unwrap_or_else(|e| panic!("cocos-hal build: {e}"));
    let release: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("release.json")).unwrap()).unwrap();
    let kernel_release = release["kernel"]["release"].as_str().unwrap().to_owned();
    let initrd = release["artifacts"][1]["path"].as_str().unwrap().to_owned();
    check_snp_digests(
        &root,
        &release,
        &amdsev,
        &out.join("vmlinuz"),
        &out.join(&initrd),
        spec.cmdline.as_str(),
    );

    let sock = work.path().join("events.sock");
    let id = format!("boot-test-{}", std::process::id());
    let log = std::fs::File::create(work.path().join("console.log")).unwrap();
    let _qemu = Qemu(
        Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-machine",
                "q35",
                "-m",
                "1024",
                "-nographic",
                "-no-reboot",
            ])
            .args(["-bios", "/usr/share/ovmf/OVMF.fd"])
            .arg("-kernel")
            .arg(out.join("vmlinuz"))
            .arg("-initrd")
            .arg(out.join(&initrd))
            .args([
                "-append",
                &format!("console=ttyS0 cocos.id={id} cocos.events=serial:cocos.events"),
            ])
            .args(["-device", "virtio-serial-pci"])
            .args([
                "-chardev",
                &format!("socket,id=ev,path={},server=on,wait=off", sock.display()),
            ])
            .args(["-device", "virtserialport,chardev=ev,name=cocos.events"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("qemu-system-x86_64 missing: run scripts/setup.sh"),
    );

    let start = Instant::now();
    let limit = Duration::from_secs(120);
    let mut conn = loop {
        match UnixStream::connect(&sock) {
            Ok(c) => break c,
            Err(_) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("QEMU's event socket never appeared: {e}"),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut dec = Decoder::new(Origin::Agent);
    let mut buf = [0u8; 65536];
    let boot = 'outer: loop {
        assert!(
            start.elapsed() < limit,
            "no boot event within {limit:?}; console:\n{}",
            std::fs::read_to_string(work.path().join("console.log")).unwrap_or_default()
        );
        match conn.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(100)),
            Ok(n) => dec.push(&buf[..n]),
            Err(_) => continue,
        }
        while let Some(rec) = dec.next_record().unwrap() {
            if let Record::Frame { id: fid, payload } = rec {
                conn.write_all(&ack(fid)).unwrap();
                let msg = AgentMessage::decode(payload.as_slice()).unwrap();
                if let Some(agent_message::Message::AgentEvent(e)) = msg.message {
                    if e.event_type == "boot" {
                        break 'outer e;
                    }
                }
            }
        }
    };
    eprintln!("boot event after {:?}", start.elapsed());
    assert_eq!(boot.computation_id, id);
    assert_eq!(boot.originator, "agent");
    let details: serde_json::Value = serde_json::from_slice(&boot.details).unwrap();
    assert_eq!(details["tee"], "none");
    assert_eq!(details["kernel"], kernel_release.as_str());
    assert!(details["cmdline"]
        .as_str()
        .unwrap()
        .contains(&format!("cocos.id={id}")));
    assert_eq!(details["transport"], "serial:cocos.events");

    // An attestation request off-hardware gets a plain "unavailable" answer, no report.
    let req = ManagerMessage {
        message: Some(manager_message::Message::AttestationRequest(
            AttestationRequest {
                nonce: b"nonce".to_vec(),
            },
        )),
    };
    conn.write_all(&frame::encode(frame::MANAGER_ID_BIT | 1, &req.encode_to_vec()).unwrap())
        .unwrap();
    let mut acked = false;
    let att = 'att: loop {
        assert!(
            start.elapsed() < limit,
            "no attestation event within {limit:?}"
        );
        match conn.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(100)),
            Ok(n) => dec.push(&buf[..n]),
            Err(_) => continue,
        }
        while let Some(rec) = dec.next_record().unwrap() {
            match rec {
                Record::Ack(i) => acked |= i == frame::MANAGER_ID_BIT | 1,
                Record::Frame { id: fid, payload } => {
                    conn.write_all(&ack(fid)).unwrap();
                    if let Some(agent_message::Message::AgentEvent(e)) =
                        AgentMessage::decode(payload.as_slice()).unwrap().message
                    {
                        if e.event_type == "attestation" {
                            break 'att e;
                        }
                    }
                }
            }
        }
    };
    while !acked && start.elapsed() < limit {
        if let Ok(n) = conn.read(&mut buf) {
            dec.push(&buf[..n]);
        }
        while let Some(rec) = dec.next_record().unwrap() {
            match rec {
                Record::Ack(i) => acked |= i == frame::MANAGER_ID_BIT | 1,
                Record::Frame { id: fid, .. } => conn.write_all(&ack(fid)).unwrap(),
            }
        }
    }
    assert!(acked, "the agent did not acknowledge the request frame");
    assert_eq!(att.status, "unavailable");
    let d: serde_json::Value = serde_json::from_slice(&att.details).unwrap();
    assert_eq!(d["tee"], "none");
    assert!(d.get("report").is_none());
}

/// release.json's SNP digests must equal sev-snp-measure 0.0.13's and cocos-measure's
/// for the same firmware, kernel, initrd and command line.
fn check_snp_digests(
    root: &std::path::Path,
    release: &serde_json::Value,
    fw: &std::path::Path,
    kernel: &std::path::Path,
    initrd: &std::path::Path,
    cmdline: &str,
) {
    let oracle = root.join("target/oracle-venv/bin/sev-snp-measure");
    assert!(
        oracle.is_file(),
        "{} missing: run scripts/setup.sh",
        oracle.display()
    );
    let measure = root.join("target/debug/cocos-measure");
    let digests = release["measurements"]["snp"]["digests"]
        .as_array()
        .unwrap_or_else(|| panic!("no SNP digests: {}", release["measurements"]["snp"]));
    assert!(digests.len() >= 2);
    for d in digests {
        let vcpus = d["vcpus"].as_u64().unwrap().to_string();
        let vcpu_type = d["vcpu_type"].as_str().unwrap();
        let args = |bin: &std::path::Path| {
            let out = Command::new(bin)
                .args([
                    "--mode",
                    "snp",
                    "--vcpus",
                    &vcpus,
                    "--vcpu-type",
                    vcpu_type,
                    "--guest-features",
                    d["guest_features"].as_str().unwrap(),
                ])
                .arg("--ovmf")
                .arg(fw)
                .arg("--kernel")
                .arg(kernel)
                .arg("--initrd")
                .arg(initrd)
                .args(["--append", cmdline])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        let want = args(&oracle);
        assert_eq!(
            d["digest"].as_str().unwrap(),
            want,
            "release.json vs sev-snp-measure for {vcpu_type} x{vcpus}"
        );
        if measure.is_file() {
            assert_eq!(args(&measure), want, "cocos-measure vs sev-snp-measure");
        }
    }
}

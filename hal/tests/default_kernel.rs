//! The default spec's kernel (hal/cocos.toml: Debian 13's 6.12, linked at
//! target/hal-cache/kernel/ by `cocos-hal kernel`, which scripts/test.sh runs before the
//! tests): its module closure resolves in load order, and with that closure it has
//! every TEE option release.json checks, and an EFI stub that measures into RTMR2.

use std::path::PathBuf;

use cocos_hal::modules::ModuleIndex;
use cocos_hal::spec::Spec;
use cocos_hal::tee::{check, KernelConfig};
use cocos_measure::tdx_launch::{linux_version, LINUX_STUB_MEASURES_TDX};

fn links() -> PathBuf {
    let l = cocos_testkit::workspace_root().join("target/hal-cache/kernel");
    assert!(
        l.join("modules").is_dir() && l.join("config").is_file(),
        "{} missing: run `cargo run -p cocos-hal -- kernel --spec hal/cocos.toml --locked` (scripts/test.sh does)",
        l.display()
    );
    l
}

#[test]
fn default_kernel_has_what_the_image_needs() {
    let l = links();
    let spec = Spec::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cocos.toml")).unwrap();
    let idx = ModuleIndex::load(&std::fs::read_link(l.join("modules")).unwrap()).unwrap();
    let release = idx.version().to_owned();
    assert!(
        linux_version(&release).is_some_and(|v| v >= LINUX_STUB_MEASURES_TDX),
        "{release}"
    );
    let closure = idx.closure(&spec.modules).unwrap();
    let names: Vec<&str> = closure.iter().map(|m| m.name.as_str()).collect();
    let pos = |m: &str| {
        names
            .iter()
            .position(|x| *x == m)
            .unwrap_or_else(|| panic!("{m} missing from {names:?}"))
    };
    assert!(pos("configfs") < pos("tsm"));
    assert!(pos("tsm") < pos("sev_guest") && pos("tsm") < pos("tdx_guest"));
    assert!(pos("vsock") < pos("vmw_vsock_virtio_transport"));
    // Built in on Debian 13: listed in the spec, but no file to load.
    assert!(idx.is_builtin("virtio_pci") && idx.is_builtin("virtio_console"));
    assert!(!names.contains(&"virtio_pci"));

    let config = KernelConfig::parse(&std::fs::read_to_string(l.join("config")).unwrap());
    let tee = check(&config, &release, &closure);
    assert!(tee.warnings.is_empty(), "{:?}", tee.warnings);
    assert!(
        tee.snp_guest && tee.tdx_guest && tee.tsm_reports && tee.vsock && tee.efi_stub_measures_tdx,
        "{tee:?}"
    );
}

//! Fuzz target for cocos-hal's image spec (TOML): parsed, validated, and its derived
//! settings (compression, mtime, file modes, TDX QEMU versions) computed. Nothing may
//! panic; errors are fine.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = cocos_hal::spec::Spec::parse(text, Path::new("/fuzz/cocos.toml")) {
        let _ = spec.validate();
        let _ = spec.compression();
        let _ = spec.mtime(Some("1700000000"));
        let _ = spec.mtime(Some(text));
        let _ = spec.tdx_qemu_versions();
    }
});

//! Fuzz target for release.json as the manager reads it: `Manifest::from_json`
//! (schema, unknown fields), then the manager's `Release::load` (artifact paths that
//! must stay in the release directory, digests), and the reference values read from
//! it. Nothing may panic; errors are fine.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let _ = cocos_proto::release::Manifest::from_json(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = cocos_measure::reference::ReferenceValues::from_json(&v, "fuzz");
    }
    let Some(dir) = DIR.get_or_init(|| tempfile::tempdir().ok()).as_ref() else {
        return;
    };
    let p = dir.path().join("release.json");
    if std::fs::write(&p, data).is_ok() {
        let _ = cocos_manager::release::Release::load(&p);
    }
});

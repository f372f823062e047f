//! Fuzz target owning the TDX surface of `cocos-measure` beyond MRTD: arbitrary bytes
//! are tried as a TDVF firmware (TD HOB for several memory sizes, CFV, RTMR0 events with
//! a table-loader script and EFI variables cut from the input, a kernel-less measure)
//! and as a bzImage (setup header, QEMU's patches for a memory/initrd/cmdline taken from
//! the input, Authenticode). Nothing may panic; errors are fine.

#![no_main]

use cocos_measure::bzimage::{apply_qemu_load, header_window, KernelSetup, LinuxLoad, SetupHeader};
use cocos_measure::efivar::{EfiVars, GLOBAL_VARIABLE, IMAGE_SECURITY_DATABASE};
use cocos_measure::ovmf::Parsed;
use cocos_measure::rtmr::{self, AcpiBlobs, Platform};
use cocos_measure::tdhob::TdHob;
use cocos_measure::tdx_launch::{authenticode_sha384, measure, TdxFirmware, TdxOptions};
use cocos_measure::Firmware;
use libfuzzer_sys::fuzz_target;

/// Upper bound on declared TDVF pages for which MRTD runs (a hash per page).
const MAX_PAGES: u64 = 1 << 12;

fn word(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, v) in b.iter_mut().enumerate() {
        *v = data.get(at.wrapping_add(i)).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fn platform(data: &[u8]) -> Platform {
    let cut = data.len() / 2;
    let (a, b) = data.split_at(cut);
    let mut vars = EfiVars::new();
    vars.insert(GLOBAL_VARIABLE, "BootOrder", a.iter().take(8).copied().collect());
    vars.insert(GLOBAL_VARIABLE, "Boot0000", b.iter().take(64).copied().collect());
    vars.insert(IMAGE_SECURITY_DATABASE, "db", b.iter().rev().take(32).copied().collect());
    Platform {
        acpi: Some(AcpiBlobs {
            tables: a.to_vec(),
            rsdp: b.iter().take(36).copied().collect(),
            loader: b.iter().take(128 * 8).copied().collect(),
        }),
        efivars: Some(vars),
        fw_cfg: vec![("BootMenu".into(), a.iter().take(2).copied().collect())],
    }
}

fuzz_target!(|data: &[u8]| {
    // As a kernel.
    if let Ok(h) = SetupHeader::parse(data) {
        let _ = h.initrd_max();
        let memory = word(data, 0x100) & 0xffff_ffff_ffff;
        let initrd = (word(data, 0x108) & 1 == 1).then(|| word(data, 0x110) & 0xffff_ffff);
        let cmdline = String::from_utf8_lossy(data.get(0x118..0x140).unwrap_or(&[])).into_owned();
        let load = LinuxLoad { memory, initrd_size: initrd, cmdline: &cmdline };
        let mut head = data.get(..header_window(&h, data.len())).unwrap_or(&[]).to_vec();
        for mode in [KernelSetup::Patched, KernelSetup::Unmodified] {
            let _ = apply_qemu_load(&mut head, data.len(), &load, mode);
        }
    }
    if data.len() <= 1 << 20 {
        let _ = authenticode_sha384(data);
    }

    // As a TDVF firmware.
    let Ok(fw) = Firmware::parse(data.to_vec()) else {
        return;
    };
    let Parsed::Valid(md) = fw.tdx_metadata() else {
        return;
    };
    let pages: u64 = md.sections.iter().map(|s| s.memory_size / 4096).fold(0, u64::saturating_add);
    let sections = md.sections.clone();
    for memory in [16 << 20, 2 << 30, 0xb000_0000, word(data, 0) & 0xffff_ffff_f000] {
        if let Ok(hob) = TdHob::build(&sections, memory) {
            assert!(hob.measured().len() + 8 == hob.bytes.len());
            let _ = rtmr::rtmr0_events(hob.measured(), data, &platform(data));
        }
    }
    let Ok(tdx) = TdxFirmware::new(fw) else {
        return;
    };
    let _ = tdx.cfv();
    if pages <= MAX_PAGES {
        let _ = measure(&tdx, None, None, "", &platform(data), &TdxOptions::default());
        let _ = measure(&tdx, None, None, "", &Platform::default(), &TdxOptions::default());
    }
});

//! Times the per-launch step of the two-step API: `SnpPrepared::digest` for a new
//! command line and vCPU count, after the firmware was prepared once. This is what
//! the manager pays per launch. Run:
//! `cargo run --release -p cocos-measure --example finish_timing -- /usr/share/ovmf/OVMF.fd`

use std::time::Instant;

use cocos_measure::{inputs, KernelHashes, SnpParams, SnpPrepared, VmmType};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/usr/share/ovmf/OVMF.fd".into());
    let fw = inputs::read_firmware(path.as_ref())?;
    let t = Instant::now();
    let prepared = SnpPrepared::new(&fw)?;
    println!(
        "prepare ({} KiB firmware): {:?}",
        fw.size() / 1024,
        t.elapsed()
    );
    let kernel_ok = prepared.supports_kernel_hashes();
    for vcpus in [1u32, 4, 64, 512] {
        let n = 2000;
        let t = Instant::now();
        for i in 0..n {
            let cmdline = format!("console=ttyS0 cocos.id={i} cocos.events=serial:cocos.events");
            let kh = KernelHashes::new([7; 32], Some([9; 32]), cmdline.as_bytes());
            let p = SnpParams {
                vcpus,
                vcpu_sig: 0x00a0_0f11,
                guest_features: 1,
                vmm: VmmType::Qemu,
            };
            std::hint::black_box(prepared.digest(kernel_ok.then_some(&kh), &p)?);
        }
        println!(
            "finish, {vcpus:>3} vCPUs: {:.1} µs per launch",
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        );
    }
    Ok(())
}
